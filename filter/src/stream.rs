//! One HTTP request through the filter.
//!
//! Headers: gather method, authority, path and all headers, and route the
//! request (the engine's head stage). When the body stages need the body,
//! buffer it (up to `max_body_bytes`), keeping only the route, and judge it
//! at the end of the stream (or at the trailers). An enforced call the
//! policy lets through, or that needs approval, then passes the gate
//! (`gate`: rate, approval, budget), which may pause it for a call to the
//! control plane. Then apply the verdict:
//!
//! | verdict                  | enforce                                  | shadow                         |
//! |--------------------------|------------------------------------------|--------------------------------|
//! | allow                    | forward untouched                        | forward, `x-aegis-shadow-decision` |
//! | sanitize                 | forward the rewritten body               | forward untouched, header      |
//! | deny, approval_needed    | local reply 403 with a JSON body         | forward, header                |
//! | body over the limit      | local reply 413 (decision `deny`)        | forward, header                |
//!
//! The shadow header is set in the headers phase, or in the body phase
//! when Envoy still holds the headers (`allow_on_headers_stop_iteration`);
//! otherwise the headers have already gone upstream and only filter state
//! and metrics carry the shadow verdict.
//!
//! Headers held or not: without Envoy's `allow_on_headers_stop_iteration`
//! a pause in the headers callback stops the body callbacks too (the host
//! turns it into "stop all"), so the request would stall. The filter then
//! lets the headers go upstream and holds only the body; a later deny
//! answers locally and Envoy resets the upstream request, which never sees
//! the body.
//!
//! A rewritten body changes the length. When Envoy holds the headers, a
//! `content-length` is set to the new length with the new body, so clean
//! bodies keep their framing. Otherwise `content-length` is dropped in the
//! headers callback whenever the body may be rewritten (the agent has DLP
//! and is enforced), because the headers may be on their way upstream
//! before the body is judged.

mod gate;

pub use gate::APPROVAL_HEADER;

use crate::host::{Host, Level};
use crate::listing::{self, Framing};
use crate::metrics::{self, NONE};
use crate::reply::{ApprovalRef, Fields, Reply, Shape};
use crate::shared::Shared;
use crate::state_keys as keys;
use aegis_engine::{
    Caller, Decision, HttpError, Mode, Reason, Request, Routed, ToolsList, Verdict,
};
use std::fmt;
use std::rc::Rc;

/// What the proxy should do after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Request header added in shadow mode.
pub const SHADOW_HEADER: &str = "x-aegis-shadow-decision";
/// Response header of local replies, and of the upstream's answer to a
/// sanitized or shadowed call.
pub const DECISION_HEADER: &str = "x-aegis-decision";

/// What the upstream's response headers get, for a call the filter let
/// through changed (sanitized) or only judged (shadow mode): the client
/// learns from the response what became of its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// `x-aegis-decision`: what was done to the call.
    decision: &'static str,
    /// `x-aegis-shadow-decision`: the verdict shadow mode did not enforce.
    shadow: Option<&'static str>,
}

/// A request whose body is being buffered: the route its head took, and
/// the headers the host handed over (the body stages read the method,
/// path and framing headers from them).
struct Pending {
    route: Routed,
    headers: Vec<(String, String)>,
    request_id: String,
    /// The request came with `content-length`.
    declared_length: bool,
    body_size: usize,
}

enum State {
    /// Before the request headers.
    Start,
    /// Judging needs the body; buffering it.
    Buffering(Box<Pending>),
    /// Decided; the rest of the request passes.
    Forward,
    /// Answered locally; nothing more goes upstream.
    Blocked,
    /// Paused for the control plane's answer (see `gate`).
    Calling(Box<gate::Held>),
}

/// An allowed MCP `tools/list` whose answer is filtered for the agent.
#[derive(Debug, Clone, Copy)]
enum ListAnswer {
    /// Waiting for the response headers.
    Expected(ToolsList),
    /// Buffering the response body.
    Buffering { list: ToolsList, framing: Framing },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Headers,
    Body,
}

/// A final outcome, ready to apply.
struct Final<'a> {
    verdict: Verdict,
    reason: String,
    agent: Option<&'a str>,
    tool: Option<&'a str>,
    action: Option<&'a str>,
    rule: Option<&'a str>,
    shadow: bool,
    /// Status of the local reply if this outcome blocks.
    status: u32,
    request_id: &'a str,
    /// How a refusal is answered (REST, or MCP's own shapes).
    shape: Shape,
    /// The MCP request's JSON-RPC id, as JSON text.
    rpc_id: Option<&'a [u8]>,
    /// The approval the call waits for.
    approval: Option<ApprovalRef<'a>>,
    /// `retry-after` of a 429, in seconds.
    retry_after: Option<u64>,
    /// The approval the call waited for or redeemed, and who decided it.
    approval_id: Option<&'a str>,
    approver: Option<&'a str>,
    /// What the call did to its agent's budget.
    budget: Option<&'static str>,
}

impl<'a> Final<'a> {
    fn from_decision(d: &Decision<'a>, request_id: &'a str, rpc_id: Option<&'a [u8]>) -> Self {
        Final {
            verdict: d.verdict,
            reason: d.reason.to_string(),
            agent: d.agent,
            tool: d.tool,
            action: d.action,
            rule: d.rule,
            shadow: d.mode == Mode::Shadow,
            status: d.reason.status().into(),
            request_id,
            shape: Shape::of(d, rpc_id.is_some()),
            rpc_id,
            approval: None,
            retry_after: None,
            approval_id: None,
            approver: None,
            budget: None,
        }
    }

    /// A body over the filter's `max_body_bytes`: a plain HTTP refusal,
    /// also for an MCP server (its JSON-RPC id has not been read).
    fn too_large(d: &Decision<'a>, request_id: &'a str) -> Self {
        let mut f = Final::from_decision(d, request_id, None);
        f.shape = Shape::Rest;
        f
    }

    /// A refusal decided by the filter itself (no policy decision).
    fn plain(verdict: Verdict, reason: String, status: u32, request_id: &'a str) -> Self {
        Final {
            verdict,
            reason,
            agent: None,
            tool: None,
            action: None,
            rule: None,
            shadow: false,
            status,
            request_id,
            shape: Shape::Rest,
            rpc_id: None,
            approval: None,
            retry_after: None,
            approval_id: None,
            approver: None,
            budget: None,
        }
    }

    /// Turns this outcome into a failure of the filter itself.
    fn internal(&mut self, e: Internal) {
        self.verdict = Verdict::Deny;
        self.reason = e.to_string();
        self.rule = None;
        self.status = Internal::STATUS.into();
        self.shape = Shape::Rest;
    }
}

/// A failure of the filter itself, not a policy refusal.
struct Internal(String);

impl Internal {
    /// The client did nothing wrong: a server error.
    const STATUS: u16 = 500;
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "internal error: {}", self.0)
    }
}

/// The refusal of a body over the filter's `max_body_bytes`, in the
/// engine's words.
fn too_large(max: usize) -> HttpError {
    HttpError::BodyTooLarge {
        limit: u32::try_from(max).unwrap_or(u32::MAX),
    }
}

fn unix_secs(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

/// The name of the MCP server whose `tools/list` answer this is.
fn tool_name(shared: &Shared, list: ToolsList) -> &str {
    shared
        .bundle
        .model
        .tools
        .get(list.tool())
        .map_or(NONE, |t| t.name.as_str())
}

fn find<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The filter's side of one HTTP stream.
pub struct Stream<H: Host> {
    host: H,
    shared: Option<Rc<Shared>>,
    state: State,
    /// Time spent inside the filter's callbacks so far.
    busy_nanos: u64,
    /// Headers for the upstream's response, when the call went through
    /// changed or only judged.
    stamp: Option<Stamp>,
    /// The answer to filter, for an allowed `tools/list`.
    list: Option<ListAnswer>,
    /// Grants given back at once, by call token (see `gate`).
    give_backs: Vec<(u32, crate::budget::Settle)>,
}

impl<H: Host> Stream<H> {
    /// `shared`: `None` when the plugin is not configured; every request is
    /// then refused (503).
    pub fn new(host: H, shared: Option<Rc<Shared>>) -> Self {
        Stream {
            host,
            shared,
            state: State::Start,
            busy_nanos: 0,
            stamp: None,
            list: None,
            give_backs: Vec::new(),
        }
    }

    /// The upstream's response headers: says what became of a sanitized
    /// or shadowed call, and gets a `tools/list` answer ready for
    /// filtering.
    pub fn on_response_headers(&mut self) -> Flow {
        if let Some(ListAnswer::Expected(list)) = self.list.take() {
            self.expect_list(list);
        }
        let Some(stamp) = self.stamp.take() else {
            return Flow::Continue;
        };
        let headers = [
            (DECISION_HEADER, Some(stamp.decision)),
            (SHADOW_HEADER, stamp.shadow),
        ];
        for (name, value) in headers {
            let Some(value) = value else { continue };
            if let Err(e) = self.host.set_response_header(name, Some(value)) {
                self.host.log(
                    Level::Warn,
                    &format!("aegis: cannot add `{name}` to the response: {e}"),
                );
            }
        }
        Flow::Continue
    }

    /// A `tools/list` answer is filtered when it is a 200 in JSON or an
    /// event stream, not compressed; its length will change, so
    /// `content-length` goes now (Envoy frames the body itself).
    fn expect_list(&mut self, list: ToolsList) {
        let headers = self.host.response_headers();
        let status = find(&headers, ":status").unwrap_or_default();
        let framing = find(&headers, "content-type").and_then(Framing::of);
        let encoded = find(&headers, "content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let framing = match framing {
            Some(f) if status == "200" && !encoded => f,
            // Not a list (an error status, a 202): nothing to filter.
            _ if status != "200" => return,
            _ => {
                let why = if encoded {
                    "the answer is compressed"
                } else {
                    "the answer is neither JSON nor an event stream"
                };
                return self.list_unfiltered(list, why);
            }
        };
        if let Err(e) = self.host.set_response_header("content-length", None) {
            return self.list_unfiltered(list, &format!("cannot drop `content-length`: {e}"));
        }
        self.list = Some(ListAnswer::Buffering { list, framing });
    }

    /// The upstream's response body: buffered and filtered only for a
    /// `tools/list` answer, up to `max_body_bytes`.
    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let Some(ListAnswer::Buffering { list, framing }) = self.list else {
            return Flow::Continue;
        };
        let Some(shared) = self.shared.clone() else {
            return Flow::Continue;
        };
        if body_size > shared.max_body_bytes {
            self.list = None;
            self.list_unfiltered(list, "the answer is larger than `max_body_bytes`");
            return Flow::Continue;
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        self.list = None;
        let body = self.host.response_body(body_size);
        let bundle = &shared.bundle;
        match listing::filter(framing, &body, |name| bundle.listing(list, name)) {
            Ok(f) => {
                if let Some(new) = &f.body {
                    if let Err(e) = self.host.replace_response_body(body_size, new) {
                        self.list_unfiltered(list, &format!("cannot rewrite it: {e}"));
                        return Flow::Continue;
                    }
                }
                let outcome = if f.body.is_some() {
                    "filtered"
                } else {
                    "unchanged"
                };
                self.count_list(&shared, list, outcome);
            }
            Err(why) => self.list_unfiltered(list, why),
        }
        Flow::Continue
    }

    /// A `tools/list` answer passed as the server sent it: logged and
    /// counted (listing grants nothing; every call is still judged).
    fn list_unfiltered(&mut self, list: ToolsList, why: &str) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let tool = tool_name(&shared, list);
        self.host.log(
            Level::Warn,
            &format!("aegis: `tools/list` answer of `{tool}` passed unfiltered: {why}"),
        );
        self.count_list(&shared, list, "unfiltered");
    }

    fn count_list(&self, shared: &Shared, list: ToolsList, outcome: &str) {
        let tool = tool_name(shared, list);
        if let Ok(mut m) = shared.metrics.try_borrow_mut() {
            m.count(
                &self.host,
                metrics::TOOLS_LIST_TOTAL,
                &[("tool", tool), ("outcome", outcome)],
            );
        }
    }

    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        if !matches!(self.state, State::Start) {
            return Flow::Continue;
        }
        let t0 = self.host.now_nanos();
        let flow = self.headers(end_of_stream, t0);
        self.account(t0);
        flow
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let max = self
            .shared
            .as_ref()
            .map_or(usize::MAX, |s| s.max_body_bytes);
        match &mut self.state {
            // A chunk that neither ends the body nor passes the limit is
            // only counted: no clock read, no host call.
            State::Buffering(p) if !end_of_stream && body_size <= max => {
                p.body_size = body_size;
                return Flow::Pause;
            }
            State::Buffering(_) => {}
            State::Blocked | State::Calling(_) => return Flow::Pause,
            State::Start | State::Forward => return Flow::Continue,
        }
        let t0 = self.host.now_nanos();
        let flow = self.body(Some(body_size), end_of_stream, t0);
        self.account(t0);
        flow
    }

    /// Trailers end the body: judge what was buffered.
    pub fn on_request_trailers(&mut self) -> Flow {
        match self.state {
            State::Buffering(_) => {}
            State::Blocked | State::Calling(_) => return Flow::Pause,
            State::Start | State::Forward => return Flow::Continue,
        }
        let t0 = self.host.now_nanos();
        let flow = self.body(None, true, t0);
        self.account(t0);
        flow
    }

    /// Adds the time since `t0` to the time spent in the filter, while the
    /// request is still undecided (a decided request has recorded its
    /// latency already).
    fn account(&mut self, t0: u64) {
        if !matches!(self.state, State::Buffering(_) | State::Calling(_)) {
            return;
        }
        let spent = self.host.now_nanos().saturating_sub(t0);
        self.busy_nanos = self.busy_nanos.saturating_add(spent);
    }

    fn headers(&mut self, end_of_stream: bool, t0: u64) -> Flow {
        let headers = self.host.request_headers();
        let Some(shared) = self.shared.clone() else {
            let f = Final::plain(
                Verdict::Deny,
                "the aegis filter is not configured".into(),
                503,
                find(&headers, "x-request-id").unwrap_or(NONE),
            );
            return self.conclude(None, &f, Phase::Headers, t0);
        };
        // The agent's credential never goes upstream, whatever the verdict:
        // the tool gets its own key from the proxy. The decision reads the
        // copy taken above.
        let aegis_headers = [APPROVAL_HEADER];
        for name in shared.bundle.credential_headers().chain(aegis_headers) {
            if find(&headers, name).is_some() {
                if let Err(e) = self.host.set_request_header(name, None) {
                    self.host.log(
                        Level::Error,
                        &format!("aegis: cannot remove the agent credential `{name}`: {e}"),
                    );
                    let f = Final::plain(
                        Verdict::Deny,
                        format!("internal error: cannot remove the agent credential `{name}`"),
                        500,
                        find(&headers, "x-request-id").unwrap_or(NONE),
                    );
                    return self.conclude(Some(&shared), &f, Phase::Headers, t0);
                }
            }
        }
        let method = find(&headers, ":method").unwrap_or_default();
        // Base-URL mode: the route the request took names the tool host it
        // stands for (Envoy route metadata), and that is where it goes.
        let bound = if shared.tool_host_from_route {
            self.host.route_tool_host()
        } else {
            None
        };
        let authority = match bound.as_deref() {
            Some(host) => host,
            None => find(&headers, ":authority")
                .filter(|a| !a.is_empty())
                .or_else(|| find(&headers, "host"))
                .unwrap_or_default(),
        };
        let path = find(&headers, ":path").unwrap_or_default();
        let request_id = match find(&headers, "x-request-id").filter(|v| !v.is_empty()) {
            Some(v) => v.to_owned(),
            None => shared.ids.generate(t0),
        };
        let declared = find(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        // `content-length: 0` announces the whole (empty) body: decide now.
        // Otherwise, with the headers already upstream (Istio mode), the
        // upstream would hold a complete request before the verdict.
        let complete = end_of_stream || declared == Some(0);
        let empty: &[u8] = &[];
        let req = Request {
            method,
            authority,
            path,
            headers: headers.as_slice(),
            body: complete.then_some(empty),
        };
        let now = unix_secs(t0);
        let bundle = &shared.bundle;
        let (route, d) =
            shared.with_scratch(|s| match bundle.route(&req, Caller::FromRequest, now, s) {
                Ok(r) => (Some(r), bundle.judge(&r, &req, s)),
                Err(d) => (None, d),
            });
        let route = match route {
            Some(r) if d.verdict == Verdict::NeedBody && !complete => r,
            _ => {
                let mut f = Final::from_decision(&d, &request_id, None);
                if d.verdict == Verdict::NeedBody {
                    f.internal(Internal(
                        "the decision needs a body the request does not have".into(),
                    ));
                }
                if let Some(r) = &route {
                    let cx = gate::Ctx {
                        phase: Phase::Headers,
                        headers: &headers,
                        body: &[],
                        request_id: &request_id,
                        t0,
                    };
                    if let Some(flow) = self.gate(&shared, r, &d, &f, &cx) {
                        return flow;
                    }
                }
                return self.conclude(Some(&shared), &f, Phase::Headers, t0);
            }
        };

        let shadow = d.mode == Mode::Shadow;
        if declared.is_some_and(|n| n > shared.max_body_bytes as u64) {
            let e = too_large(shared.max_body_bytes);
            let d = bundle.refusal(&route, Reason::Http(e));
            let f = Final::too_large(&d, &request_id);
            return self.conclude(Some(&shared), &f, Phase::Headers, t0);
        }
        // A rewrite changes the length. Held headers get the new length
        // with the new body; headers that go upstream now lose theirs,
        // and Envoy frames the body itself (chunked).
        if !shadow && !shared.hold_headers && shared.may_rewrite(d.agent) {
            if let Err(e) = self.host.set_request_header("content-length", None) {
                self.host.log(
                    Level::Warn,
                    &format!(
                        "aegis: cannot drop `content-length` before a possible body rewrite: {e}"
                    ),
                );
            }
        }
        let pending = Pending {
            route,
            request_id,
            headers,
            declared_length: declared.is_some(),
            body_size: 0,
        };
        self.state = State::Buffering(Box::new(pending));
        if shared.hold_headers {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    fn take_pending(&mut self) -> Option<Box<Pending>> {
        match std::mem::replace(&mut self.state, State::Forward) {
            State::Buffering(p) => Some(p),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// A body chunk (`size`: everything buffered so far) or, with `None`,
    /// the trailers.
    fn body(&mut self, size: Option<usize>, end_of_stream: bool, t0: u64) -> Flow {
        let Some(shared) = self.shared.clone() else {
            return Flow::Continue;
        };
        let State::Buffering(p) = &mut self.state else {
            return Flow::Continue;
        };
        if let Some(n) = size {
            p.body_size = n;
        }
        let over = p.body_size > shared.max_body_bytes;
        if !over && !end_of_stream {
            return Flow::Pause;
        }
        let Some(p) = self.take_pending() else {
            return Flow::Continue;
        };
        let bundle = &shared.bundle;
        if over {
            let e = too_large(shared.max_body_bytes);
            let d = bundle.refusal(&p.route, Reason::Http(e));
            let f = Final::too_large(&d, &p.request_id);
            return self.conclude(Some(&shared), &f, Phase::Body, t0);
        }

        let body = self.host.request_body(p.body_size);
        let req = Request {
            method: find(&p.headers, ":method").unwrap_or_default(),
            // The route has the tool: the body stages do not read it.
            authority: "",
            path: find(&p.headers, ":path").unwrap_or_default(),
            headers: p.headers.as_slice(),
            body: Some(&body),
        };
        shared.with_scratch(|scratch| {
            let d = bundle.judge(&p.route, &req, scratch);
            if let Some(list) = bundle.tools_list(&d) {
                self.expect_list_answer(&shared, list);
            }
            let mut f = Final::from_decision(&d, &p.request_id, scratch.rpc_id.json());
            match d.verdict {
                Verdict::NeedBody => {
                    f.internal(Internal("the decision still needs the body".into()))
                }
                Verdict::Sanitize if !f.shadow => {
                    let len = p.body_size.max(body.len());
                    let out = &scratch.dlp.out;
                    let rewritten = self.host.replace_request_body(len, out).and_then(|()| {
                        if shared.hold_headers && p.declared_length {
                            let n = out.len().to_string();
                            self.host.set_request_header("content-length", Some(&n))
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = rewritten {
                        self.host.log(
                            Level::Error,
                            &format!("aegis: cannot rewrite the request body: {e}"),
                        );
                        f.internal(Internal(format!("cannot rewrite the request body: {e}")));
                    }
                }
                _ => {}
            }
            let cx = gate::Ctx {
                phase: Phase::Body,
                headers: &p.headers,
                body: &body,
                request_id: &p.request_id,
                t0,
            };
            match self.gate(&shared, &p.route, &d, &f, &cx) {
                Some(flow) => flow,
                None => self.conclude(Some(&shared), &f, Phase::Body, t0),
            }
        })
    }

    /// An allowed `tools/list`: its answer will be filtered. Where the
    /// headers are still held, `accept-encoding` goes, so that the server
    /// answers in a form the filter can read.
    fn expect_list_answer(&mut self, shared: &Shared, list: ToolsList) {
        if shared.hold_headers {
            if let Err(e) = self.host.set_request_header("accept-encoding", None) {
                self.host.log(
                    Level::Warn,
                    &format!("aegis: cannot drop `accept-encoding` from `tools/list`: {e}"),
                );
            }
        }
        self.list = Some(ListAnswer::Expected(list));
    }

    /// Records the outcome and applies it.
    fn conclude(&mut self, shared: Option<&Shared>, f: &Final<'_>, phase: Phase, t0: u64) -> Flow {
        self.record(shared, f, t0);
        let blocks = matches!(
            f.verdict,
            Verdict::Deny | Verdict::ApprovalNeeded | Verdict::NeedBody
        );
        if f.shadow {
            // Headers can still be edited in the headers phase, or later when
            // Envoy holds them; otherwise they are already upstream.
            if phase == Phase::Headers || shared.is_some_and(|s| s.hold_headers) {
                if let Err(e) = self
                    .host
                    .set_request_header(SHADOW_HEADER, Some(f.verdict.as_str()))
                {
                    self.host.log(
                        Level::Warn,
                        &format!("aegis: cannot add `{SHADOW_HEADER}`: {e}"),
                    );
                }
            }
            self.stamp = Some(Stamp {
                decision: Verdict::Allow.as_str(),
                shadow: Some(f.verdict.as_str()),
            });
            self.state = State::Forward;
            return Flow::Continue;
        }
        if !blocks {
            if f.verdict == Verdict::Sanitize {
                self.stamp = Some(Stamp {
                    decision: f.verdict.as_str(),
                    shadow: None,
                });
            }
            self.state = State::Forward;
            return Flow::Continue;
        }
        let decision = f.verdict.as_str();
        let fields = Fields {
            decision,
            reason: &f.reason,
            rule: f.rule,
            policy_version: shared.map(|s| s.bundle.policy_version()),
            request_id: f.request_id,
            approval: f.approval,
        };
        let reply = Reply::build(f.shape, f.status, &fields, f.rpc_id);
        let mut headers = vec![
            ("content-type", "application/json"),
            (DECISION_HEADER, decision),
        ];
        if let Some(a) = &f.approval {
            headers.push((APPROVAL_HEADER, a.id));
        }
        let retry_after = f.retry_after.map(|s| s.to_string());
        if let Some(secs) = &retry_after {
            headers.push(("retry-after", secs));
        }
        if let Err(e) = self
            .host
            .send_local_response(reply.status, &headers, &reply.body)
        {
            self.host.log(
                Level::Error,
                &format!("aegis: cannot send the local reply ({decision}): {e}"),
            );
        }
        self.state = State::Blocked;
        Flow::Pause
    }

    /// Filter state for access logs, and metrics.
    fn record(&self, shared: Option<&Shared>, f: &Final<'_>, t0: u64) {
        let decision = f.verdict.as_str();
        let mode = if f.shadow {
            Mode::Shadow.as_str()
        } else {
            Mode::Enforce.as_str()
        };
        // In the order of `keys::ALL`.
        let values = [
            Some(decision),
            Some(f.reason.as_str()),
            f.rule,
            f.agent,
            f.tool,
            f.action,
            shared.map(|s| s.bundle.policy_version()),
            Some(f.request_id),
            Some(mode),
            f.approval_id,
            f.approver,
            f.budget,
        ];
        // Each key is a host call (about 0.6 µs in Envoy): only those the
        // configuration asks for.
        let wanted = shared.map_or(keys::EVERY, |s| s.filter_state);
        for (i, (key, value)) in keys::ALL.into_iter().zip(values).enumerate() {
            if wanted & (1 << i) == 0 {
                continue;
            }
            let Some(value) = value else { continue };
            if let Err(e) = self.host.set_filter_state(key, value) {
                // One line per request at most.
                self.host.log(
                    Level::Warn,
                    &format!("aegis: cannot set filter state `{key}`: {e}"),
                );
                break;
            }
        }

        let Some(shared) = shared else { return };
        let Ok(mut m) = shared.metrics.try_borrow_mut() else {
            return;
        };
        let agent = f.agent.unwrap_or(NONE);
        let tool = f.tool.unwrap_or(NONE);
        m.count(
            &self.host,
            metrics::DECISION_TOTAL,
            &[
                ("agent", agent),
                ("tool", tool),
                ("decision", decision),
                ("mode", mode),
            ],
        );
        if matches!(f.verdict, Verdict::Deny | Verdict::ApprovalNeeded) {
            m.count(
                &self.host,
                metrics::POLICY_VIOLATION_TOTAL,
                &[
                    ("agent", agent),
                    ("tool", tool),
                    ("rule", f.rule.unwrap_or(NONE)),
                    ("decision", decision),
                    ("mode", mode),
                ],
            );
        }
        let spent = self
            .busy_nanos
            .saturating_add(self.host.now_nanos().saturating_sub(t0));
        m.record(&self.host, metrics::LATENCY_MS, spent / 1_000_000);
        m.record(&self.host, metrics::LATENCY_US, spent / 1_000);
    }
}
