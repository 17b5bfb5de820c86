//! The evaluator: one request in, one decision out.
//!
//! Pipeline (first verdict wins), in two stages a proxy can call apart:
//! the head ([`Bundle::route`]: request shape, one meaning for the
//! authority and path, see [`crate::http`]; identity; egress; tool and
//! action) and the body ([`Bundle::judge`]: framing headers, gzip,
//! parameters, rules and conditions, DLP). Each step returns what the next
//! needs or the [`Reason`] that ends the decision. Nothing on this path
//! allocates: parameters are borrowed slices of the request, predicates
//! compare decoded bytes on the fly and the scratch space (DLP buffers,
//! object keys, inflated gzip) is reused across requests.

use crate::bundle::{
    agent_key, AgentEntry, Bundle, Limits, Lit, PredEntry, PredOp, RuleEntry, TSeg, ToolEntry,
};
use crate::dfa::{full_match, full_match_parts, is_match};
use crate::dlp;
use crate::http::{self, header, HeaderValue, Headers, HttpError, PathBytes, Request};
use crate::index::{agent_hash, host_hash};
use crate::jwt::{self, CacheHit, TokenCache, TokenCacheConfig};
use crate::mcp::{mcp_action, mcp_stream, reaches_mcp_server, McpCall};
use crate::params::{
    extract_form, extract_json, extract_json_with, parse_number, Enc, ExtractError, KeySet,
    ParamPaths, Text, Value, MAX_PARAMS,
};
use crate::reason::{Reason, Redactions, Shown};
use crate::types::{Approval, BodyKind, Mode, Verdict};
use core::fmt;

/// No parameters: what a tool without prepared paths would read (the
/// loader prepares them for every tool).
static NO_PARAMS: ParamPaths = ParamPaths::EMPTY;

/// Who is calling.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'r> {
    /// Authenticated elsewhere (test cases, trusted callers).
    Given {
        agent: &'r str,
        tenant: Option<&'r str>,
    },
    /// Authenticate from the request (token or, in insecure mode, header).
    FromRequest,
}

/// An agent of one loaded bundle, found by an earlier decision. Only that
/// bundle understands it; another bundle treats it as an unknown agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentRef(u32);

/// A request routed by its head ([`Bundle::route`]): the authenticated
/// agent, the tool and, for an HTTP tool, the action. The body stages
/// ([`Bundle::judge`]) continue from it, so a token is verified and a
/// route matched once per request, and a caller waiting for its body
/// keeps these few bytes instead of a copy of the request line. Only the
/// bundle that made it understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    caller: AgentRef,
    tool: u16,
    action: Option<u16>,
    write: bool,
}

impl Routed {
    /// The authenticated agent.
    pub fn caller(&self) -> AgentRef {
        self.caller
    }

    /// The tool's index in the bundle's tools.
    pub fn tool(&self) -> usize {
        usize::from(self.tool)
    }
}

/// The verdict and everything a decision log needs.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub verdict: Verdict,
    pub reason: Reason<'a>,
    pub agent: Option<&'a str>,
    pub tool: Option<&'a str>,
    pub action: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub mode: Mode,
    /// DLP set whose counts are in the scratch (sanitize and DLP deny).
    pub dlp_set: Option<u32>,
    pub cost_usd: Option<f64>,
    /// The action writes (POST/PUT/PATCH/DELETE or marked `write: true`).
    pub write: bool,
    /// The authenticated caller, for a later decision on the same request
    /// (see [`Caller::Known`]).
    pub caller: Option<AgentRef>,
    /// The request went to an MCP server: a refusal is answered in MCP's
    /// own shape where the message has an id ([`Scratch::rpc_id`]).
    pub mcp: bool,
}

impl<'a> Decision<'a> {
    fn new(reason: Reason<'a>) -> Self {
        Decision {
            verdict: reason.verdict(),
            reason,
            agent: None,
            tool: None,
            action: None,
            rule: None,
            mode: Mode::Enforce,
            dlp_set: None,
            cost_usd: None,
            write: false,
            caller: None,
            mcp: false,
        }
    }

    /// The outcome is `reason`, and the verdict it stands for.
    fn set(&mut self, reason: Reason<'a>) {
        self.verdict = reason.verdict();
        self.reason = reason;
    }
}

/// Reusable per-worker memory for decisions (DLP buffers, the keys of the
/// JSON objects being read). Allocated once; a decision allocates nothing.
#[derive(Debug)]
pub struct Scratch {
    pub dlp: dlp::Scratch,
    /// The JSON-RPC id of the last decision's MCP request, if it had one.
    pub rpc_id: RpcId,
    /// Verified agent tokens (off unless made by [`Scratch::for_bundle`]
    /// for a bundle that verifies tokens).
    pub tokens: TokenCache,
    keys: KeySet,
    inflater: crate::gzip::Inflater,
    wrapped: alloc::vec::Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// Sized for the default limits.
    pub fn new() -> Self {
        Self::with_limits(&Limits::default())
    }

    /// Sized for a bundle's limits, with no room yet for inflating gzip
    /// bodies (the first one grows it).
    pub fn with_limits(limits: &Limits) -> Self {
        Scratch {
            dlp: dlp::Scratch::new(),
            rpc_id: RpcId::new(),
            keys: KeySet::with_capacity(limits.max_params as usize),
            inflater: crate::gzip::Inflater::new(0),
            wrapped: alloc::vec::Vec::new(),
            tokens: TokenCache::off(),
        }
    }

    /// Sized for everything `bundle` may need, so that no decision ever
    /// allocates: with a tool that reads gzip, room for `max_body_bytes`
    /// of inflated body; with a bundle that verifies agent tokens, a
    /// verified-token cache of the default size
    /// ([`TokenCacheConfig::DEFAULT`]).
    pub fn for_bundle(bundle: &Bundle) -> Self {
        Self::for_bundle_with(bundle, TokenCacheConfig::DEFAULT)
    }

    /// [`Scratch::for_bundle`] with a token cache of the given size (made
    /// only when the bundle verifies tokens).
    pub fn for_bundle_with(bundle: &Bundle, token_cache: TokenCacheConfig) -> Self {
        let limits = bundle.model.limits;
        let mut s = Self::with_limits(&limits);
        if bundle.model.tools.iter().any(|t| t.gzip) {
            s.inflater = crate::gzip::Inflater::new(limits.max_body_bytes as usize);
        }
        let verifies_tokens = bundle.keys.is_some()
            && bundle
                .model
                .identity
                .as_ref()
                .is_some_and(|i| !i.insecure_agent_header);
        if verifies_tokens {
            s.tokens = TokenCache::new(token_cache);
        }
        s
    }
}

/// Longest JSON-RPC `id` (as JSON text, quotes included) a decision keeps
/// to answer the request with.
pub const RPC_ID_MAX: usize = 128;

/// The JSON-RPC `id` of the MCP request a decision read, as JSON text (a
/// number as sent, a string with its quotes and escapes as sent), so that
/// a refusal answers that very request. Kept in the [`Scratch`]: a
/// decision allocates nothing.
#[derive(Clone)]
pub struct RpcId {
    buf: [u8; RPC_ID_MAX],
    len: usize,
}

impl RpcId {
    const fn new() -> Self {
        RpcId {
            buf: [0; RPC_ID_MAX],
            len: 0,
        }
    }

    /// The id as JSON text; `None` when the message had no usable id (a
    /// notification, a batch, a body that is not JSON, an id longer than
    /// [`RPC_ID_MAX`]).
    pub fn json(&self) -> Option<&[u8]> {
        self.buf.get(..self.len).filter(|b| !b.is_empty())
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn set(&mut self, v: &Value<'_>) {
        self.len = 0;
        let (quote, raw) = match v {
            Value::Num(n) => (false, *n),
            // The string as it stood between its quotes.
            Value::Text(t) if matches!(t.enc, Enc::Json | Enc::Plain) => (true, t.raw),
            _ => return,
        };
        let q = usize::from(quote);
        let n = raw.len() + 2 * q;
        let Some(out) = self.buf.get_mut(..n) else {
            return;
        };
        if quote {
            if let Some((first, rest)) = out.split_first_mut() {
                *first = b'"';
                if let Some((last, mid)) = rest.split_last_mut() {
                    *last = b'"';
                    mid.copy_from_slice(raw);
                }
            }
        } else {
            out.copy_from_slice(raw);
        }
        self.len = n;
    }
}

impl fmt::Debug for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.json() {
            Some(b) => write!(
                f,
                "RpcId({})",
                Shown(core::str::from_utf8(b).unwrap_or("?"))
            ),
            None => f.write_str("RpcId(none)"),
        }
    }
}

fn ends_with_ignore_case(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len()
        && host
            .get(host.len() - suffix.len()..)
            .is_some_and(|t| t.eq_ignore_ascii_case(suffix))
}

impl Bundle {
    /// The request headers that carry the agent's credential: the token
    /// header, or with `insecure_agent_header` the agent and tenant
    /// headers. The proxy removes them before a request goes upstream, so
    /// a tool never sees an agent's token.
    pub fn credential_headers(&self) -> impl Iterator<Item = &str> {
        let id = self.model.identity.as_ref();
        let insecure = id.is_some_and(|i| i.insecure_agent_header);
        let token = id.filter(|_| !insecure).map(|i| i.token_header.as_str());
        let agent = insecure.then_some(["x-aegis-agent", "x-aegis-tenant"]);
        token.into_iter().chain(agent.into_iter().flatten())
    }

    /// Whether `method host path` goes to an MCP server of the catalog
    /// (for answering a refusal in MCP's shape before the tool is matched).
    fn is_mcp_server(&self, method: &str, host: &str, path: &str) -> bool {
        self.tools_for_host(host, host_hash(host))
            .iter()
            .filter_map(|&t| self.model.tools.get(usize::from(t)))
            .any(|t| reaches_mcp_server(t, method, path))
    }

    /// The agent an earlier decision on this bundle found.
    pub(crate) fn agent(&self, r: AgentRef) -> Option<&AgentEntry> {
        usize::try_from(r.0)
            .ok()
            .and_then(|i| self.model.agents.get(i))
    }

    /// The rules of `agent` for (tool, action), in policy order.
    pub(crate) fn rules_for(
        &self,
        agent: &AgentEntry,
        tool: usize,
        action: usize,
    ) -> Option<&[RuleEntry]> {
        let i = agent
            .table
            .binary_search_by(|e| (usize::from(e.tool), usize::from(e.action)).cmp(&(tool, action)))
            .ok()?;
        let e = agent.table.get(i)?;
        self.model.rules.get(e.rules.range())
    }

    pub(crate) fn find_agent(
        &self,
        tenant: Option<&str>,
        name: &str,
    ) -> Option<(AgentRef, &AgentEntry)> {
        let key = (tenant, name);
        let agents = &self.model.agents;
        let i = self.agent_index.find(agent_hash(tenant, name), |i| {
            agents.get(i).is_some_and(|a| agent_key(a) == key)
        })?;
        Some((AgentRef(u32::try_from(i).ok()?), agents.get(i)?))
    }

    /// Tools registered for `host` (`hash`: its [`host_hash`]).
    fn tools_for_host(&self, host: &str, hash: u64) -> &[u16] {
        let exact = &self.model.exact_hosts;
        if let Some(i) = self.host_index.find(hash, |i| {
            exact
                .get(i)
                .is_some_and(|(h, _)| h.eq_ignore_ascii_case(host))
        }) {
            return exact.get(i).map_or(&[], |(_, t)| t.as_slice());
        }
        self.model
            .wildcard_hosts
            .iter()
            .find(|(s, _)| ends_with_ignore_case(host, s))
            .map_or(&[], |(_, t)| t.as_slice())
    }

    /// Whether `agent` may reach `host` (`hash`: its [`host_hash`]).
    fn egress_allowed(&self, who: AgentRef, agent: &AgentEntry, host: &str, hash: u64) -> bool {
        let Some(list) = &agent.allow_hosts else {
            return true;
        };
        let by_hash = self
            .egress_hashes
            .get(who.0 as usize)
            .map_or(&[][..], |v| v.as_slice());
        let from = by_hash.partition_point(|(h, _)| *h < hash);
        by_hash
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|(h, _)| *h == hash)
            .any(|(_, i)| {
                list.exact
                    .get(*i as usize)
                    .is_some_and(|e| e.eq_ignore_ascii_case(host))
            })
            || list.suffixes.iter().any(|s| ends_with_ignore_case(host, s))
    }

    // `Reason` is large only for its sanitize variant; boxing it would
    // allocate on the decision path.
    #[allow(clippy::result_large_err)]
    fn authenticate<'a, H: Headers + ?Sized>(
        &'a self,
        req: &Request<'a, H>,
        query: Option<&str>,
        now: i64,
        tokens: &mut TokenCache,
    ) -> Result<(AgentRef, &'a AgentEntry), Reason<'a>> {
        let Some(idc) = &self.model.identity else {
            return Err(Reason::NoIdentityConfigured);
        };
        if idc.insecure_agent_header {
            let HeaderValue::One(agent) = header(req.headers, "x-aegis-agent") else {
                return Err(Reason::MissingAgentHeader);
            };
            let tenant = match header(req.headers, "x-aegis-tenant") {
                HeaderValue::One(t) => Some(t),
                HeaderValue::Missing => None,
                HeaderValue::Many => return Err(Reason::MissingAgentHeader),
            };
            return self.find_agent(tenant, agent).ok_or(Reason::UnknownAgent);
        }
        let name = idc.token_header.as_str();
        let value = match header(req.headers, name) {
            HeaderValue::Missing if query.is_some_and(has_query_token) => {
                return Err(Reason::TokenInQuery { header: name })
            }
            HeaderValue::Missing => return Err(Reason::MissingToken { header: name }),
            HeaderValue::Many => return Err(Reason::MultipleTokens { header: name }),
            // HTTP/1 proxies join repeated headers with commas; a JWT never
            // contains one, so a comma means several credentials.
            HeaderValue::One(v) if v.contains(',') => {
                return Err(Reason::MultipleTokens { header: name })
            }
            HeaderValue::One(v) => v,
        };
        // The authorization headers carry a scheme; a header of the
        // policy's own may carry the bare token.
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            None if !name.ends_with("authorization") => value,
            _ => return Err(Reason::BadAuthScheme { header: name }),
        };
        let Some(keys) = &self.keys else {
            return Err(Reason::NoIdentityConfigured);
        };
        let token = token.as_bytes();
        match tokens.lookup(&self.hash, token, idc, now) {
            Some(CacheHit::Valid(i)) => {
                let agent = self.agent(AgentRef(i)).ok_or(Reason::UnknownAgent)?;
                return Ok((AgentRef(i), agent));
            }
            Some(CacheHit::Invalid(e)) => return Err(Reason::InvalidToken(e)),
            None => {}
        }
        let (p, validity) =
            jwt::verify_with_validity(token, idc, keys, now).map_err(Reason::InvalidToken)?;
        let found = self
            .find_agent(p.tenant.as_ref().map(|t| t.as_str()), p.agent.as_str())
            .ok_or(Reason::UnknownAgent)?;
        tokens.insert(&self.hash, token, found.0 .0, validity);
        Ok(found)
    }

    /// Judges one request: [`Bundle::route`], then [`Bundle::judge`].
    /// With `req.body == None` the result may be `NeedBody`; call
    /// [`Bundle::judge`] again with the route once the whole body is there
    /// (or this again, which authenticates and routes again).
    pub fn decide<'a, H: Headers + ?Sized>(
        &'a self,
        req: &Request<'a, H>,
        caller: Caller<'a>,
        now: i64,
        scratch: &mut Scratch,
    ) -> Decision<'a> {
        match self.route(req, caller, now, scratch) {
            Ok(r) => self.judge(&r, req, scratch),
            Err(d) => d,
        }
    }

    /// The head stage: one meaning for the request line, identity, egress,
    /// and the tool (with its action, when the route names one) that the
    /// agent may call. The body is not read. A refusal comes back as the
    /// decision to apply; a request that goes on comes back as the route
    /// the body stage continues from.
    // The refusal is a whole decision, returned by value: boxing it would
    // allocate on the decision path.
    #[allow(clippy::result_large_err)]
    pub fn route<'a, H: Headers + ?Sized>(
        &'a self,
        req: &Request<'a, H>,
        caller: Caller<'a>,
        now: i64,
        scratch: &mut Scratch,
    ) -> Result<Routed, Decision<'a>> {
        scratch.rpc_id.clear();
        // 0. one meaning for the request line, or none at all
        if req.method.eq_ignore_ascii_case("CONNECT") {
            return Err(Decision::new(Reason::Http(HttpError::Connect)));
        }
        let shape = http::split_path(req.path).and_then(|(p, q)| {
            let host = http::host_of(req.authority)?;
            http::check_host_header(req.headers, host)?;
            Ok((host, p, q))
        });
        let (host, path, query) = shape.map_err(|e| Decision::new(Reason::Http(e)))?;
        // A refusal before the tool is known is still answered in MCP's
        // shape when the request goes to an MCP server.
        let refuse = |r: Reason<'a>, d: Option<Decision<'a>>| {
            let mut d = d.unwrap_or_else(|| Decision::new(Reason::Internal("unset")));
            d.set(r);
            d.mcp = self.is_mcp_server(req.method, host, path);
            d
        };

        // 1. identity
        let agent = match caller {
            Caller::Given { agent, tenant } => {
                let (tenant, name) = match (tenant, http::split_once_ascii(agent, b'/')) {
                    (None, Some((t, a))) => (Some(t), a),
                    _ => (tenant, agent),
                };
                self.find_agent(tenant, name).ok_or(Reason::UnknownAgent)
            }
            Caller::FromRequest => self.authenticate(req, query, now, &mut scratch.tokens),
        };
        let (who, agent) = agent.map_err(|r| refuse(r, None))?;
        let mut d = Decision::new(Reason::Internal("unset"));
        d.caller = Some(who);
        d.agent = Some(&agent.id);
        d.mode = agent.mode;

        // 2. egress
        let hash = host_hash(host);
        if !self.egress_allowed(who, agent, host, hash) {
            return Err(refuse(Reason::EgressDenied { host }, Some(d)));
        }

        // 3. tool + action
        let Some((ti, tool, action)) = self.find_tool(req.method, host, hash, path) else {
            d.set(if self.tools_for_host(host, hash).is_empty() {
                Reason::UnknownHost { host }
            } else {
                Reason::UnknownRoute {
                    method: req.method,
                    host,
                    path,
                }
            });
            return Err(d);
        };
        d.tool = Some(&tool.name);
        let is_mcp = tool.mcp_path.is_some();
        d.mcp = is_mcp;
        let mut write = false;
        // For an HTTP tool the action is known from the route; see whether
        // the agent may call it before looking at any body.
        if let Some(ai) = action {
            let Some(a) = tool.actions.get(ai) else {
                d.set(Reason::Internal("route action"));
                return Err(d);
            };
            d.action = Some(&a.name);
            write = a.write || matches!(req.method, "POST" | "PUT" | "PATCH" | "DELETE");
            d.write = write;
            if self.rules_for(agent, ti, ai).is_none() {
                d.set(Reason::NotPermitted {
                    tool: &tool.name,
                    action: &a.name,
                });
                return Err(d);
            }
        } else if !agent.table.iter().any(|e| usize::from(e.tool) == ti) {
            // MCP server this agent has no rule for at all.
            d.set(Reason::NotPermitted {
                tool: &tool.name,
                action: "*",
            });
            return Err(d);
        }
        let (Ok(tool), Ok(action)) = (u16::try_from(ti), action.map(u16::try_from).transpose())
        else {
            d.set(Reason::Internal("tool index"));
            return Err(d);
        };
        Ok(Routed {
            caller: who,
            tool,
            action,
            write,
        })
    }

    /// The tool (its index and entry) and, for an HTTP tool, the action
    /// that `method path` on `host` calls.
    fn find_tool(
        &self,
        method: &str,
        host: &str,
        hash: u64,
        path: &str,
    ) -> Option<(usize, &ToolEntry, Option<usize>)> {
        let plain_path = !path.as_bytes().contains(&b'%');
        for &ti in self.tools_for_host(host, hash) {
            let ti = usize::from(ti);
            let Some(tool) = self.model.tools.get(ti) else {
                continue;
            };
            if tool.mcp_path.is_some() {
                if reaches_mcp_server(tool, method, path) {
                    return Some((ti, tool, None));
                }
            } else if let Some(Some(dfa)) = self.routes.get(ti) {
                // Routes read `%XX` of an unreserved character as the
                // character; a path with no `%` is read as it is.
                let pid = if plain_path {
                    full_match_parts(dfa, &[method.as_bytes(), b" ", path.as_bytes()])
                } else {
                    let line = method
                        .bytes()
                        .chain(core::iter::once(b' '))
                        .chain(PathBytes::new(path));
                    full_match(dfa, line)
                };
                if let Some(pid) = pid {
                    let action = tool.route_actions.get(pid).map(|a| usize::from(*a));
                    return Some((ti, tool, action));
                }
            }
        }
        None
    }

    /// The tenant (if any) and name of the agent a route was made for.
    pub fn agent_of(&self, route: &Routed) -> Option<(Option<&str>, &str)> {
        self.agent(route.caller)
            .map(|a| (a.tenant.as_deref(), a.name.as_str()))
    }

    /// The agent's `budget` (daily USD, calls per second), if it has one.
    pub fn budget_of(&self, route: &Routed) -> Option<crate::bundle::AgentBudget> {
        self.agent(route.caller).and_then(|a| a.budget)
    }

    /// The decision a route starts from: who, which tool and action.
    fn routed_decision(&self, r: &Routed) -> Option<(Decision<'_>, &AgentEntry, &ToolEntry)> {
        let agent = self.agent(r.caller)?;
        let tool = self.model.tools.get(usize::from(r.tool))?;
        let mut d = Decision::new(Reason::Internal("unset"));
        d.caller = Some(r.caller);
        d.agent = Some(&agent.id);
        d.mode = agent.mode;
        d.tool = Some(&tool.name);
        d.mcp = tool.mcp_path.is_some();
        d.write = r.write;
        if let Some(ai) = r.action {
            d.action = Some(&tool.actions.get(usize::from(ai))?.name);
        }
        Some((d, agent, tool))
    }

    /// The decision for a routed request refused for `reason` outside the
    /// body stages (a body over the proxy's own limit, a spent budget, a
    /// control plane that does not answer): who, which tool and action,
    /// and why. The verdict is the reason's.
    pub fn refusal<'a>(&'a self, route: &Routed, reason: Reason<'a>) -> Decision<'a> {
        match self.routed_decision(route) {
            Some((mut d, _, _)) => {
                d.set(reason);
                d
            }
            None => Decision::new(Reason::Internal("route of another bundle")),
        }
    }

    /// The body stages, from a route the head stage made (with this
    /// bundle): framing, the body (inflated), its parameters, the agent's
    /// rules and their conditions, then DLP. Reads the request's method,
    /// path, headers and body, not its authority (the route has the tool).
    /// With `req.body == None`: `NeedBody` when the decision needs it.
    pub fn judge<'a, H: Headers + ?Sized>(
        &'a self,
        route: &Routed,
        req: &Request<'a, H>,
        scratch: &mut Scratch,
    ) -> Decision<'a> {
        scratch.rpc_id.clear();
        let Some((mut d, agent, tool)) = self.routed_decision(route) else {
            return Decision::new(Reason::Internal("route of another bundle"));
        };
        let reason = match self.body_stages(route, agent, tool, req, scratch, &mut d) {
            Ok(r) | Err(r) => r,
        };
        d.set(reason);
        d
    }

    // `Reason` is large only for its sanitize variant; boxing it would
    // allocate on the decision path.
    #[allow(clippy::result_large_err)]
    fn body_stages<'a, H: Headers + ?Sized>(
        &'a self,
        route: &Routed,
        agent: &'a AgentEntry,
        tool: &'a ToolEntry,
        req: &Request<'a, H>,
        scratch: &mut Scratch,
        d: &mut Decision<'a>,
    ) -> Result<Reason<'a>, Reason<'a>> {
        let is_mcp = tool.mcp_path.is_some();
        if is_mcp && req.method != "POST" {
            return mcp_stream(req);
        }
        // A JSON or form body is always read, even when no rule looks at
        // it: a malformed or ambiguous body is denied, never waved through.
        // DLP scans any body, whatever the tool's body kind.
        let limits = self.model.limits;
        let coding = self.framing(tool, req.headers, req.body.unwrap_or_default())?;
        let gzip = coding == http::Coding::Gzip;
        let needs_body = is_mcp || gzip || agent.dlp.is_some() || tool.body != BodyKind::None;
        let body = match req.body {
            Some(b) => b,
            None if needs_body => return Err(Reason::NeedBody),
            None => &[],
        };
        let Scratch {
            dlp: dlp_scratch,
            rpc_id,
            keys,
            inflater,
            wrapped,
            tokens: _,
        } = scratch;
        // A gzip body is judged on what it inflates to.
        let body = if gzip && !body.is_empty() {
            inflater
                .inflate(body, limits.max_body_bytes)
                .map_err(Reason::Gzip)?
        } else {
            body
        };
        let ti = usize::from(route.tool);
        let path = http::split_path(req.path).map_or(req.path, |(p, _)| p);
        let query = http::split_path(req.path).ok().and_then(|(_, q)| q);

        // Parameters: path template, query string, body.
        let mut slots = [Value::Absent; MAX_PARAMS];
        if let Some(a) = route
            .action
            .and_then(|ai| tool.actions.get(usize::from(ai)))
        {
            bind_template(&a.template, path, &mut slots);
        }
        // With DLP on a JSON body, the walk that reads the parameters also
        // hands every string to the scanner: the body is read once. What
        // it finds is used in the DLP stage, after the rules.
        let scanner = agent.dlp.and_then(|set| self.scanners.get(set as usize));
        let mut json_dlp = match scanner {
            Some(sc) if tool.body == BodyKind::Json && !body.is_empty() => {
                Some((sc, sc.json_begin(body, dlp_scratch)))
            }
            _ => None,
        };
        let extracted = (|| {
            // An MCP server reads its arguments from the JSON-RPC body only;
            // a query string must not fill in what the body leaves out.
            keys.clear();
            if let Some(q) = query.filter(|_| !is_mcp) {
                extract_form(
                    q.as_bytes(),
                    &tool.params,
                    &mut slots,
                    limits.max_params as usize,
                    keys,
                )?;
            }
            if !body.is_empty() {
                match tool.body {
                    BodyKind::Json => {
                        let first = body.iter().find(|b| !b.is_ascii_whitespace());
                        if !is_mcp && first != Some(&b'{') {
                            return Err(ExtractError::NotObject);
                        }
                        // Query keys and body keys are different names
                        // (a watched parameter given in both is caught by
                        // its slot).
                        keys.clear();
                        let paths = self.param_paths.get(ti).unwrap_or(&NO_PARAMS);
                        let depth = limits.max_json_depth as usize;
                        let most = limits.max_params as usize;
                        match json_dlp.as_mut() {
                            // Without DLP the walk is built with nothing to
                            // hand the strings to.
                            None => extract_json(body, paths, &mut slots, depth, most, keys)?,
                            Some((sc, scan)) => extract_json_with(
                                body,
                                paths,
                                &mut slots,
                                depth,
                                most,
                                keys,
                                |text, quoted| sc.json_text(scan, text, quoted, dlp_scratch),
                            )?,
                        }
                    }
                    BodyKind::Form => extract_form(
                        body,
                        &tool.params,
                        &mut slots,
                        limits.max_params as usize,
                        keys,
                    )?,
                    BodyKind::None => {}
                }
            }
            Ok::<(), ExtractError>(())
        })();
        // A request to an MCP server is answered by its id, also when it is
        // refused for a flaw found after the id was read.
        if is_mcp && matches!(slots.first(), Some(Value::Text(_))) {
            if let Some(id) = slots.get(2) {
                rpc_id.set(id);
            }
        }
        extracted.map_err(Reason::BadRequest)?;

        // MCP: the action is the JSON-RPC tool name; protocol messages pass
        // without a rule, on to DLP.
        let (ai, plumbing) = match route.action {
            Some(ai) => (Some(usize::from(ai)), None),
            None => match mcp_action(tool, body, &slots, req.headers)? {
                McpCall::Tool(ai) => (Some(ai), None),
                McpCall::Plumbing(method) => (None, Some(method)),
            },
        };
        if let Some(ai) = ai {
            self.rules(agent, tool, ti, ai, &slots, req.method, d)?;
        }

        // DLP
        if let (Some(set), false) = (agent.dlp, body.is_empty()) {
            let scanner = scanner.ok_or(Reason::Internal("dlp set"))?;
            d.dlp_set = Some(set);
            let outcome = match json_dlp.take() {
                Some((sc, scan)) => sc.json_outcome(&scan, dlp_scratch),
                None => scanner.scan(tool.body, body, limits.max_json_depth as usize, dlp_scratch),
            };
            match outcome.map_err(Reason::DlpError)? {
                dlp::Outcome::Clean => {}
                dlp::Outcome::Found { rewritten: true } => {
                    if gzip {
                        // Sent on as gzip, as the headers say.
                        wrapped.clear();
                        crate::gzip::write_stored(&dlp_scratch.out, wrapped);
                        core::mem::swap(&mut dlp_scratch.out, wrapped);
                    }
                    return Ok(Reason::Sanitized(Redactions::new(
                        scanner,
                        dlp_scratch.counts,
                    )));
                }
                dlp::Outcome::Found { rewritten: false } => {
                    let detector = scanner
                        .pattern_names()
                        .zip(dlp_scratch.counts.iter())
                        .find(|(_, c)| **c > 0)
                        .map_or("dlp", |(n, _)| n);
                    return Err(Reason::DlpDenied { detector });
                }
            }
        }
        match (plumbing, d.rule) {
            (Some(method), _) => Ok(Reason::McpPlumbing { method }),
            (None, Some(rule)) => Ok(Reason::Allowed { rule }),
            (None, None) => Err(Reason::Internal("no rule")),
        }
    }

    /// The framing stage: the body headers have one meaning the tool
    /// accepts, and the body is within `max_body_bytes`.
    #[allow(clippy::result_large_err)]
    fn framing<H: Headers + ?Sized>(
        &self,
        tool: &ToolEntry,
        headers: &H,
        body: &[u8],
    ) -> Result<http::Coding, Reason<'static>> {
        let kind = if tool.mcp_path.is_some() {
            BodyKind::Json
        } else {
            tool.body
        };
        let limits = self.model.limits;
        let coding = http::check_body_headers(headers, kind, tool.gzip, !body.is_empty())
            .map_err(Reason::Http)?;
        if body.len() > limits.max_body_bytes as usize {
            return Err(Reason::Http(HttpError::BodyTooLarge {
                limit: limits.max_body_bytes,
            }));
        }
        Ok(coding)
    }

    /// The rules stage: the agent's first rule for the action whose `when`
    /// holds, then its conditions and whether it asks for approval.
    #[allow(clippy::result_large_err, clippy::too_many_arguments)]
    fn rules<'a>(
        &'a self,
        agent: &'a AgentEntry,
        tool: &'a ToolEntry,
        ti: usize,
        ai: usize,
        slots: &[Value<'_>],
        method: &str,
        d: &mut Decision<'a>,
    ) -> Result<(), Reason<'a>> {
        let is_mcp = tool.mcp_path.is_some();
        let a = tool.actions.get(ai).ok_or(Reason::Internal("action"))?;
        d.action = Some(&a.name);
        if is_mcp {
            d.write = a.write || method == "POST";
        }
        let rules = self.rules_for(agent, ti, ai).ok_or(Reason::NotPermitted {
            tool: &tool.name,
            action: &a.name,
        })?;
        let rule = rules
            .iter()
            .find(|r| {
                let preds = self.model.preds.get(r.when.range()).unwrap_or_default();
                preds.iter().all(|p| self.holds(p, slots))
            })
            .ok_or(Reason::NoRuleApplies {
                tool: &tool.name,
                action: &a.name,
            })?;
        d.rule = Some(&rule.id);
        d.cost_usd = rule.cost_usd;
        let conds = self.model.preds.get(rule.conds.range()).unwrap_or_default();
        if let Some(p) = conds.iter().find(|p| !self.holds(p, slots)) {
            let param = tool
                .params
                .get(usize::from(p.slot))
                .map_or(&[][..], |v| v.as_slice());
            return Err(Reason::ConditionFailed {
                param,
                op: &p.op,
                missing: slots.get(usize::from(p.slot)).is_none_or(Value::is_absent),
                mcp: is_mcp,
                ask: rule.approval == Approval::OnFailure,
            });
        }
        if rule.approval == Approval::Always {
            return Err(Reason::ApprovalRequired { rule: &rule.id });
        }
        Ok(())
    }

    fn holds(&self, p: &PredEntry, slots: &[Value<'_>]) -> bool {
        let v = slots.get(usize::from(p.slot)).copied().unwrap_or_default();
        if v.is_absent() {
            return matches!(p.op, PredOp::Absent);
        }
        match &p.op {
            PredOp::Absent => false,
            PredOp::Exists => true,
            PredOp::Eq(l) => lit_eq(l, &v),
            PredOp::Ne(l) => !lit_eq(l, &v),
            PredOp::In(ls) => ls.iter().any(|l| lit_eq(l, &v)),
            PredOp::NotIn(ls) => !ls.iter().any(|l| lit_eq(l, &v)),
            PredOp::Lt(n) => v.number().is_some_and(|x| x < *n),
            PredOp::Le(n) => v.number().is_some_and(|x| x <= *n),
            PredOp::Gt(n) => v.number().is_some_and(|x| x > *n),
            PredOp::Ge(n) => v.number().is_some_and(|x| x >= *n),
            PredOp::Matches(r) => self.regex_match(*r, &v) == Some(true),
            PredOp::NotMatches(r) => self.regex_match(*r, &v) == Some(false),
        }
    }

    /// `None` when the value has no text form (objects, arrays, null).
    fn regex_match(&self, r: u32, v: &Value<'_>) -> Option<bool> {
        let dfa = self.regexes.get(r as usize)?;
        match v {
            Value::Text(t) => Some(is_match(dfa, t.bytes())),
            Value::Num(n) => Some(is_match(dfa, n.iter().copied())),
            Value::Bool(b) => Some(is_match(dfa, if *b { "true" } else { "false" }.bytes())),
            _ => None,
        }
    }
}

fn lit_eq(l: &Lit, v: &Value<'_>) -> bool {
    match (l, v) {
        (Lit::Str(s), Value::Text(t)) => t.eq_bytes(s.as_bytes()),
        // A string literal that spells a number equals that number.
        (Lit::Str(s), Value::Num(_)) => match (parse_number(s.bytes()), v.number()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        (Lit::Str(s), Value::Bool(b)) => s == if *b { "true" } else { "false" },
        (Lit::Num(n), _) => v.number() == Some(*n),
        (Lit::Bool(b), Value::Bool(x)) => b == x,
        (Lit::Bool(b), Value::Text(t)) => t.eq_bytes(if *b { b"true" } else { b"false" }),
        _ => false,
    }
}

fn bind_template<'a>(template: &[TSeg], path: &'a str, slots: &mut [Value<'a>]) {
    let segs = http::split_ascii(path.strip_prefix('/').unwrap_or(path), b'/');
    for (t, s) in template.iter().zip(segs) {
        if let TSeg::Param(p) = t {
            if let Some(slot) = slots.get_mut(usize::from(*p)) {
                *slot = Value::Text(Text {
                    raw: s.as_bytes(),
                    enc: crate::params::Enc::Percent,
                });
            }
        }
    }
}

/// Whether a query string carries an OAuth-style `access_token` (RFC 6750
/// section 2.3), however its key is percent-encoded.
fn has_query_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or_default();
        Text {
            raw: key.as_bytes(),
            enc: crate::params::Enc::Form,
        }
        .eq_bytes(b"access_token")
    })
}
