//! The case corpus (`policies/**/*.cases.yaml`, docs/testing.md)
//! through a real Envoy.
//!
//! A case that names its agent directly (`agent:`) has no token, but a
//! proxy only believes tokens. So each policy folder is copied and given an
//! identity this harness can issue tokens for: a generated `kind: Identity`
//! document when the folder has none, or one more trusted key in the
//! folder's own Identity document. Every such case then carries a fresh
//! token for its agent and tenant ([`aegis_engine::jwt::issue::issue`]).
//!
//! Envoy judges at the real clock, which a test cannot set. The reference
//! for every case is therefore [`run_case`] at the real clock on the very
//! bundle inside the blob; a case's own expectations (`expect:`) are
//! checked through Envoy only where the case's clock (`now:`) and the real
//! clock give the same verdict (e.g. not for the recorded tokens of
//! `policies/mssp`, whose one-hour lifetime has passed). Those are counted.
//!
//! Every case goes over HTTP/1.1 ([`crate::wire`], the exact bytes) and
//! HTTP/2 ([`crate::h2c`], prior knowledge) to the same listener, unless
//! its `protocols:` names one; a case the HTTP/2 client cannot express
//! (a fragment, `transfer-encoding`, ...) is counted as not sent over
//! HTTP/2, with the reason. A case marked `envoy: reject` must be refused
//! by Envoy itself: a 4xx without `x-aegis-decision` (over HTTP/2 a stream
//! reset also counts), no decision in the access log, nothing upstream.

use crate::blob::{self, key_b64, Built};
use crate::client::Resp;
use crate::h2c::{self, H2Client};
use crate::upstream::{EchoServer, Recorded, ECHO_HEADER};
use crate::wire::{self, NoResponse, WireRequest};
use crate::{err, repo_root, Result};
use aegis_cases::format::{Case, EnvoyExpect, Protocol};
use aegis_cases::runner::{
    check, now_unix, request_path, run_case, show_bytes, split_url, url_scheme, Outcome,
};
use aegis_compiler::case_file::load_cases;
use aegis_engine::jwt::issue::{issue, TokenRequest};
use aegis_engine::{Bundle, Caller, Mode, Request, Scratch, Verdict};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A folder of policies with case files.
#[derive(Debug, Clone)]
pub struct Folder {
    /// Unique among the folders of a run, e.g. `finance` (under
    /// `policies/`) or `fixtures/wire`.
    pub name: String,
    /// Where it is, for reports: `policies/finance`.
    pub label: String,
    pub dir: PathBuf,
    pub case_files: Vec<PathBuf>,
}

/// Every folder under `policies/` that holds a `*.cases.yaml`.
pub fn folders() -> Result<Vec<Folder>> {
    folders_in(&repo_root().join("policies"), "policies")
}

/// The harness's own case folders (`e2e/tests/fixtures/*`): cases for the
/// runners' wire features, named `fixtures/<folder>`.
pub fn fixture_folders() -> Result<Vec<Folder>> {
    let root = repo_root().join("e2e").join("tests").join("fixtures");
    Ok(folders_in(&root, "e2e/tests/fixtures")?
        .into_iter()
        .map(|f| Folder {
            name: format!("fixtures/{}", f.name),
            ..f
        })
        .collect())
}

/// Every folder under `root` that holds a `*.cases.yaml`, named by its
/// path under `root`; `label` is how reports call `root`.
pub fn folders_in(root: &Path, label: &str) -> Result<Vec<Folder>> {
    let root = root.to_path_buf();
    Ok(
        aegis_cases::format::case_groups(std::slice::from_ref(&root))
            .into_iter()
            .map(|(dir, case_files)| {
                let name = dir
                    .strip_prefix(&root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| dir.display().to_string());
                Folder {
                    label: format!("{label}/{name}"),
                    name,
                    dir,
                    case_files,
                }
            })
            .collect(),
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| err(format!("mkdir {}: {e}", to.display())))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| err(format!("cannot list {}: {e}", from.display())))?;
    for e in entries.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| err(format!("copy {}: {e}", src.display())))?;
        }
    }
    Ok(())
}

/// How the harness gets tokens the bundle accepts.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub issuer: String,
    pub audience: String,
    pub kid: String,
    pub key: SigningKey,
    /// `Some(reason)` when tokens cannot be issued for this folder (e.g.
    /// the Identity document maps claims to other names).
    pub unusable: Option<String>,
}

/// The key id of the harness's key in every Identity document.
pub const E2E_KID: &str = "aegis-e2e";

/// One policy folder ready for Envoy: a copy with the harness's identity,
/// its blob, and its cases.
pub struct Prepared {
    pub folder: Folder,
    pub built: Built,
    pub issuer: Issuer,
    /// Whether a whole Identity document was added (`false`: the harness's
    /// key was added to the folder's own).
    pub identity_added: bool,
    pub cases: Vec<Case>,
}

/// Copies `folder` under `workdir`, gives it the harness's identity and
/// builds its blob signed with `policy_key`.
pub fn prepare(
    folder: &Folder,
    workdir: &Path,
    policy_key: &SigningKey,
    token_key: &SigningKey,
) -> Result<Prepared> {
    let slug = folder.name.replace(['/', '\\'], "-");
    let copy = workdir.join("policies").join(&slug);
    copy_dir(&folder.dir, &copy)?;
    let public = key_b64(&token_key.verifying_key());
    let (issuer, identity_added) = match add_key_to_identity(&copy, &public)? {
        Some(found) => (
            Issuer {
                issuer: found.issuer,
                audience: found.audience,
                kid: E2E_KID.into(),
                key: token_key.clone(),
                unusable: found.unusable,
            },
            false,
        ),
        None => {
            let issuer = "https://tokens.aegis-e2e.invalid".to_string();
            let audience = "aegis-e2e".to_string();
            let doc = format!(
                "# Added by the e2e harness: tokens for the cases' agents.\n\
                 kind: Identity\nissuer: {issuer}\naudience: {audience}\n\
                 keys:\n  - kid: {E2E_KID}\n    public_key: \"{public}\"\n"
            );
            let path = copy.join("zz-aegis-e2e-identity.yaml");
            std::fs::write(&path, doc)
                .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
            (
                Issuer {
                    issuer,
                    audience,
                    kid: E2E_KID.into(),
                    key: token_key.clone(),
                    unusable: None,
                },
                true,
            )
        }
    };
    let built = blob::build(&[copy], policy_key, &workdir.join(format!("{slug}.wasm")))
        .map_err(|e| err(format!("{}: {e}", folder.label)))?;
    let mut cases = Vec::new();
    for f in &folder.case_files {
        cases.extend(load_cases(f).map_err(|d| err(format!("{}: {d:?}", f.display())))?);
    }
    Ok(Prepared {
        folder: folder.clone(),
        built,
        issuer,
        identity_added,
        cases,
    })
}

/// What a folder's own Identity document says about its tokens.
struct FoundIdentity {
    issuer: String,
    audience: String,
    unusable: Option<String>,
}

/// Finds the `kind: Identity` document in the folder copy and adds the
/// harness's key to it (the file is rewritten as JSON, which is YAML).
/// `None` when the folder has no Identity document.
fn add_key_to_identity(dir: &Path, public_b64: &str) -> Result<Option<FoundIdentity>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    for f in files {
        let is_yaml = f.extension().is_some_and(|x| x == "yaml" || x == "yml");
        if !is_yaml || aegis_cases::format::is_cases_file(&f) {
            continue;
        }
        let text = std::fs::read_to_string(&f)
            .map_err(|e| err(format!("cannot read {}: {e}", f.display())))?;
        let mut docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| err(format!("{}: {e}", f.display())))?;
        let Some(doc) = docs
            .iter_mut()
            .find(|d| d.get("kind").and_then(Value::as_str) == Some("Identity"))
        else {
            continue;
        };
        let field = |d: &Value, k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
        let issuer = field(doc, "issuer").ok_or_else(|| err("Identity without `issuer`"))?;
        let audience = field(doc, "audience").ok_or_else(|| err("Identity without `audience`"))?;
        let claims_ok = doc.get("claims").is_none_or(|c| {
            let is = |k: &str, default: &str| c.get(k).is_none_or(|v| v.as_str() == Some(default));
            is("agent", "sub") && is("tenant", "tenant")
        });
        let insecure = doc
            .get("insecure_agent_header")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let keys = doc
            .get_mut("keys")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| err(format!("{}: Identity without a `keys` list", f.display())))?;
        keys.push(serde_json::json!({"kid": E2E_KID, "public_key": public_b64}));
        let out: Vec<String> = docs.iter().map(Value::to_string).collect();
        std::fs::write(&f, out.join("\n---\n"))
            .map_err(|e| err(format!("cannot write {}: {e}", f.display())))?;
        let unusable = if insecure {
            Some("the Identity document trusts agent headers, not tokens".to_string())
        } else if !claims_ok {
            Some("the Identity document maps claims to other names".to_string())
        } else {
            None
        };
        return Ok(Some(FoundIdentity {
            issuer,
            audience,
            unusable,
        }));
    }
    Ok(None)
}

impl Prepared {
    /// A token for `agent` (`tenant/agent` splits like the engine does).
    pub fn token(&self, agent: &str, tenant: Option<&str>) -> String {
        let (tenant, agent) = match (tenant, agent.split_once('/')) {
            (None, Some((t, a))) => (Some(t), a),
            _ => (tenant, agent),
        };
        issue(
            &self.issuer.key,
            &TokenRequest {
                kid: &self.issuer.kid,
                issuer: &self.issuer.issuer,
                audience: &self.issuer.audience,
                agent,
                tenant,
                scope: None,
                ttl_secs: 3_600,
                now: now_unix(),
            },
        )
    }

    /// The request an agent sends for `case`, or why it cannot be sent:
    /// the case's url, headers (in order, repeats and `host` included) and
    /// body, plus a token for a case that names its agent and the
    /// harness's `x-request-id`.
    pub fn wire_request(
        &self,
        case: &Case,
        request_id: &str,
    ) -> std::result::Result<WireRequest, String> {
        let url = &case.request.url;
        let (authority, _) = split_url(url);
        let mut headers = case.request.headers.clone();
        if case.request.has_header("x-request-id") {
            return Err("the case gives its own x-request-id, which the harness sets".into());
        }
        if let Some(agent) = &case.agent {
            if let Some(why) = &self.issuer.unusable {
                return Err(why.clone());
            }
            if case.request.has_header("authorization") {
                return Err("the case gives an agent and an authorization header".into());
            }
            headers.push((
                "authorization".into(),
                format!("Bearer {}", self.token(agent, case.tenant.as_deref())),
            ));
        }
        headers.push(("x-request-id".into(), request_id.to_string()));
        Ok(WireRequest {
            method: case.request.method.clone(),
            url: url.clone(),
            scheme: url_scheme(url).unwrap_or("http").to_string(),
            authority: authority.to_string(),
            path: request_path(url).into_owned(),
            headers,
            body: case.request.body.clone(),
        })
    }
}

/// What the engine says about a case, natively.
#[derive(Debug, Clone)]
pub struct Reference {
    /// [`run_case`] at the real clock: what Envoy must produce.
    pub now: Outcome,
    /// Whether the case's own clock gives the same outcome (its
    /// expectations then apply to Envoy too).
    pub clock_independent: bool,
    pub mode: Mode,
    /// Decided from the headers alone (no body needed).
    pub headers_only: bool,
}

/// The reference for `case`, with `wire` the request Envoy gets.
pub fn reference(bundle: &Bundle, case: &Case, wire: &WireRequest) -> Reference {
    let mut scratch = Scratch::new();
    let real = Case {
        now: None,
        ..case.clone()
    };
    let now = run_case(bundle, &real, &mut scratch);
    let own = run_case(bundle, case, &mut scratch);
    let clock_independent = same_outcome(&own, &now);
    let mode = bundle
        .model
        .agents
        .iter()
        .find(|a| Some(a.id.as_str()) == now.agent.as_deref())
        .map_or(Mode::Enforce, |a| a.mode);
    // What the filter sees: `host` is replaced by the url's authority.
    let headers: Vec<(&str, &str)> = wire
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let req = Request {
        method: &wire.method,
        authority: &wire.authority,
        path: &wire.path,
        headers: headers.as_slice(),
        body: None,
    };
    let headers_only = wire.body.as_ref().is_none_or(Vec::is_empty)
        || bundle
            .decide(&req, Caller::FromRequest, now_unix(), &mut scratch)
            .verdict
            != Verdict::NeedBody;
    Reference {
        now,
        clock_independent,
        mode,
        headers_only,
    }
}

fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
    a.decision == b.decision
        && a.reason == b.reason
        && a.rule == b.rule
        && a.body == b.body
        && a.agent == b.agent
}

/// One case sent through Envoy over one protocol.
pub struct Sent {
    /// [`Folder::name`].
    pub folder: String,
    /// [`Folder::label`].
    pub folder_label: String,
    pub case: Case,
    pub request_id: String,
    pub protocol: Protocol,
    pub wire: WireRequest,
    pub reference: Reference,
    /// The response, or why there was none.
    pub response: std::result::Result<Resp, NoResponse>,
}

impl Sent {
    /// Envoy must refuse the request itself (`envoy: reject`).
    pub fn envoy_rejects(&self) -> bool {
        self.case.envoy == Some(EnvoyExpect::Reject)
    }

    /// `policies/<folder>: `<case>` [http1]`, for reports.
    pub fn label(&self) -> String {
        format!(
            "{}: `{}` [{}]",
            self.folder_label,
            self.case.name,
            self.protocol.as_str()
        )
    }
}

/// A difference between Envoy and the engine that is understood and
/// tracked: the verdict must still agree, Envoy's reason must contain
/// `envoy_reason_contains`, and once the two agree again the entry fails
/// as stale so it gets removed.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub folder: &'static str,
    pub case: &'static str,
    /// Only over this protocol; `None`: over both.
    pub protocol: Option<Protocol>,
    pub envoy_reason_contains: &'static str,
    pub why: &'static str,
}

/// Counts for the report.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests sent (a case over two protocols counts twice).
    pub sent: usize,
    pub sent_http1: usize,
    pub sent_http2: usize,
    /// Expectations (`expect:`) checked through Envoy.
    pub expectations_checked: usize,
    /// Sent and compared with the engine, but the case's clock differs
    /// from the real one in outcome, so its `expect:` was not applied.
    pub clock_dependent: usize,
    /// `envoy: reject` requests that Envoy refused as it should.
    pub rejects_checked: usize,
    /// Of those, over HTTP/2 with a stream reset instead of a 4xx.
    pub rejects_by_reset: usize,
    /// Not sent at all, with the reasons (a failure: a gap in coverage).
    pub skipped: Vec<String>,
    /// Not sent over one protocol because its `protocols:` leaves it out.
    pub not_for_protocol: Vec<String>,
    /// Not sent over HTTP/2 because the client cannot express it, with
    /// the reason.
    pub http2_unsendable: Vec<String>,
    /// Cases that matched a [`Known`] divergence.
    pub known: Vec<String>,
}

/// The protocol clients, made once per test.
pub struct Clients {
    h2: H2Client,
}

impl Clients {
    pub fn new() -> Result<Clients> {
        Ok(Clients {
            h2: H2Client::new()?,
        })
    }

    /// Sends `req` to `127.0.0.1:port` over `protocol`.
    pub fn send(
        &self,
        protocol: Protocol,
        port: u16,
        req: &WireRequest,
    ) -> std::result::Result<Resp, NoResponse> {
        match protocol {
            Protocol::Http1 => wire::send_http1(port, req),
            Protocol::Http2 => self.h2.send(port, req),
        }
    }
}

/// Sends every case of `prep` over `protocol` to the listener on `port`.
pub fn send_all(
    prep: &Prepared,
    port: u16,
    protocol: Protocol,
    clients: &Clients,
    id_prefix: &str,
    tally: &mut Tally,
) -> Vec<Sent> {
    let mut out = Vec::new();
    for (i, case) in prep.cases.iter().enumerate() {
        let label = format!(
            "{}: `{}` [{}]",
            prep.folder.label,
            case.name,
            protocol.as_str()
        );
        if !case.runs_over(protocol) {
            tally.not_for_protocol.push(label);
            continue;
        }
        let request_id = format!(
            "{id_prefix}-{}-{}-{i}",
            protocol.as_str(),
            prep.folder.name.replace('/', "-")
        );
        let wire = match prep.wire_request(case, &request_id) {
            Ok(w) => w,
            Err(why) => {
                tally.skipped.push(format!("{label}: {why}"));
                continue;
            }
        };
        if protocol == Protocol::Http2 {
            if let Some(why) = h2c::unsendable(&wire) {
                tally.http2_unsendable.push(format!("{label}: {why}"));
                continue;
            }
        }
        let reference = reference(&prep.built.bundle, case, &wire);
        let response = clients.send(protocol, port, &wire);
        tally.sent += 1;
        match protocol {
            Protocol::Http1 => tally.sent_http1 += 1,
            Protocol::Http2 => tally.sent_http2 += 1,
        }
        out.push(Sent {
            folder: prep.folder.name.clone(),
            folder_label: prep.folder.label.clone(),
            case: case.clone(),
            request_id,
            protocol,
            wire,
            reference,
            response,
        });
    }
    out
}

fn log_str(log: &Value, key: &str) -> Option<String> {
    match log.get(key) {
        Some(Value::String(s)) if s != "-" => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The outcome Envoy produced, from its access log (filter state), the
/// body the upstream received and the status Envoy answered.
pub fn observed(sent: &Sent, log: &Value, upstream: &[Recorded], resp_status: u16) -> Outcome {
    let decision = log_str(log, "decision").unwrap_or_default();
    let body = (decision == "sanitize")
        .then(|| upstream.iter().find(|r| r.complete).map(|r| r.body.clone()))
        .flatten();
    Outcome {
        name: sent.case.name.clone(),
        decision,
        reason: log_str(log, "reason").unwrap_or_default(),
        rule: log_str(log, "rule"),
        policy_version: log_str(log, "policy_version").unwrap_or_default(),
        body,
        agent: log_str(log, "agent"),
        tool: log_str(log, "tool"),
        action: log_str(log, "action"),
        // The reply's shape is checked on the reply itself; the status is
        // the one Envoy answered.
        shape: aegis_engine::reply::Shape::Rest,
        status: resp_status,
        rpc_id: None,
    }
}

/// What the upstream must see as the target of a forwarded request: the
/// path and query exactly as written. An absolute-form request-target
/// reaches the upstream in origin-form; Envoy refuses a `#fragment` (400,
/// `path_normalization_failed`), so no forwarded request has one.
pub fn upstream_path(wire: &WireRequest) -> &str {
    &wire.path
}

/// Everything wrong with a case marked `envoy: reject`: Envoy's codec must
/// refuse it before the filter (a 4xx without `x-aegis-decision`; over
/// HTTP/2 a stream reset also counts), without a decision in the access
/// log (if it logged the request at all) and without the upstream seeing
/// it.
pub fn judge_reject(
    sent: &Sent,
    log: Option<&Value>,
    upstream: &[Recorded],
    tally: &mut Tally,
) -> Vec<String> {
    let mut bad = Vec::new();
    match &sent.response {
        Ok(resp) => {
            if !(400..500).contains(&resp.status) {
                bad.push(format!(
                    "envoy: reject, but the answer was {} {:?}: {}",
                    resp.status,
                    resp.header("x-aegis-decision"),
                    resp.text()
                ));
            }
            if let Some(d) = resp.header("x-aegis-decision") {
                bad.push(format!(
                    "envoy: reject, but the filter answered (x-aegis-decision `{d}`)"
                ));
            }
            if resp.header(ECHO_HEADER).is_some() {
                bad.push("envoy: reject, but the upstream answered".into());
            }
        }
        Err(NoResponse::Reset(_)) if sent.protocol == Protocol::Http2 => {
            tally.rejects_by_reset += 1;
        }
        Err(e) => bad.push(format!("envoy: reject, but no response: {e}")),
    }
    if let Some(d) = log.and_then(|l| log_str(l, "decision")) {
        bad.push(format!(
            "envoy: reject, but the filter decided `{d}` (access log)"
        ));
    }
    if !upstream.is_empty() {
        bad.push(format!(
            "envoy: reject, but the upstream saw the request: {upstream:?}"
        ));
    }
    if bad.is_empty() {
        tally.rejects_checked += 1;
    }
    bad
}

/// Everything wrong with one case through Envoy in `holds_headers` mode;
/// empty = it behaved. `tally` counts checked expectations.
pub fn judge(
    sent: &Sent,
    log: &Value,
    upstream: &[Recorded],
    holds_headers: bool,
    known: &[Known],
    tally: &mut Tally,
) -> Vec<String> {
    let mut bad = Vec::new();
    let r = &sent.reference;
    let resp = match &sent.response {
        Ok(resp) => resp,
        Err(e) => {
            return vec![format!(
                "no response from Envoy: {e} (the filter decided {:?}; if Envoy's codec \
                 refuses this request, mark the case `envoy: reject`)",
                log_str(log, "decision")
            )]
        }
    };
    if log_str(log, "decision").is_none() && resp.header("x-aegis-decision").is_none() {
        return vec![format!(
            "Envoy answered {} itself ({}) and the filter never decided; if Envoy's codec \
             refuses this request, mark the case `envoy: reject` (with `protocols:` when only \
             one protocol refuses it)",
            resp.status,
            log_str(log, "details").unwrap_or_else(|| "no details".into())
        )];
    }
    let got = observed(sent, log, upstream, resp.status);
    let mut want = r.now.clone();
    let mut diverges = false;
    if let Some(k) = known.iter().find(|k| {
        k.folder == sent.folder
            && k.case == sent.case.name
            && k.protocol.is_none_or(|p| p == sent.protocol)
    }) {
        if got.reason == want.reason {
            bad.push(format!(
                "known divergence no longer happens (Envoy agrees with the engine now): \
                 remove it from the list ({})",
                k.why
            ));
        } else if got.decision == want.decision && got.reason.contains(k.envoy_reason_contains) {
            diverges = true;
            want.reason = got.reason.clone();
            tally.known.push(format!(
                "{}: Envoy says `{}`: {}",
                sent.label(),
                got.reason,
                k.why
            ));
        }
    }
    let want = &want;

    // Envoy and the engine agree.
    let fields: [(&str, Option<&str>, Option<&str>); 7] = [
        ("decision", Some(&want.decision), Some(&got.decision)),
        ("reason", Some(&want.reason), Some(&got.reason)),
        ("rule", want.rule.as_deref(), got.rule.as_deref()),
        (
            "policy_version",
            Some(&want.policy_version),
            Some(&got.policy_version),
        ),
        ("agent", want.agent.as_deref(), got.agent.as_deref()),
        ("tool", want.tool.as_deref(), got.tool.as_deref()),
        ("action", want.action.as_deref(), got.action.as_deref()),
    ];
    for (name, w, g) in fields {
        if w != g {
            bad.push(format!("{name}: engine `{w:?}`, envoy `{g:?}`"));
        }
    }
    let mode = match r.mode {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    };
    if log_str(log, "mode").as_deref() != Some(mode) {
        bad.push(format!(
            "access log mode `{:?}`, expected `{mode}`",
            log.get("mode")
        ));
    }
    if log_str(log, "request_id").as_deref() != Some(sent.request_id.as_str()) {
        bad.push(format!(
            "access log request_id `{:?}`",
            log.get("request_id")
        ));
    }
    let complete: Vec<&Recorded> = upstream.iter().filter(|u| u.complete).collect();
    let status = log.get("status").and_then(|s| {
        s.as_u64()
            .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
    });
    if status != Some(u64::from(resp.status)) {
        bad.push(format!(
            "access log status {status:?}, response {}",
            resp.status
        ));
    }

    let blocks =
        r.mode == Mode::Enforce && matches!(want.decision.as_str(), "deny" | "approval_needed");
    if blocks {
        let (expected_status, expect) = aegis_cases::runner::expected_reply(want, &sent.request_id);
        if u32::from(resp.status) != expected_status {
            bad.push(format!(
                "status {} for a {}, expected {expected_status}",
                resp.status, want.decision
            ));
        }
        if resp.header("x-aegis-decision") != Some(want.decision.as_str()) {
            bad.push(format!(
                "x-aegis-decision `{:?}`",
                resp.header("x-aegis-decision")
            ));
        }
        if resp.header(ECHO_HEADER).is_some() {
            bad.push("a blocked request was answered by the upstream".into());
        }
        match resp.json() {
            Ok(j) => {
                if j != expect {
                    bad.push(format!("deny body {j}, expected {expect}"));
                }
            }
            Err(e) => bad.push(e.0),
        }
        // The upstream never gets a blocked request's body; with the
        // headers held it never hears of the request at all.
        if !complete.is_empty() {
            bad.push(format!(
                "the upstream received the blocked request: {complete:?}"
            ));
        }
        if upstream.iter().any(|u| !u.body.is_empty()) {
            bad.push("the upstream received body bytes of a blocked request".into());
        }
        if holds_headers && !upstream.is_empty() {
            bad.push("headers held, yet the upstream saw the blocked request's headers".into());
        }
        if r.headers_only && !upstream.is_empty() {
            bad.push("decided on its headers, yet the upstream saw the blocked request".into());
        }
    } else {
        if resp.status != 200 || resp.header(ECHO_HEADER).is_none() {
            bad.push(format!(
                "expected the upstream's 200, got {} {:?}: {}",
                resp.status,
                resp.header("x-aegis-decision"),
                resp.text()
            ));
        }
        // The response says what became of a call that went through
        // changed (sanitized) or only judged (shadow mode).
        let (decision, shadow) = match (r.mode, want.decision.as_str()) {
            (Mode::Shadow, v) => (Some("allow"), Some(v)),
            (_, "sanitize") => (Some("sanitize"), None),
            _ => (None, None),
        };
        if resp.header("x-aegis-decision") != decision {
            bad.push(format!(
                "x-aegis-decision {:?} on the response, expected {decision:?}",
                resp.header("x-aegis-decision")
            ));
        }
        if resp.header("x-aegis-shadow-decision") != shadow {
            bad.push(format!(
                "x-aegis-shadow-decision {:?} on the response, expected {shadow:?}",
                resp.header("x-aegis-shadow-decision")
            ));
        }
        match complete.as_slice() {
            [one] => {
                let sent_body = sent.wire.body.clone().unwrap_or_default();
                let expected_body = match (&r.mode, want.decision.as_str(), &want.body) {
                    (Mode::Enforce, "sanitize", Some(b)) => b.clone(),
                    _ => sent_body,
                };
                if one.body != expected_body {
                    bad.push(format!(
                        "upstream body `{}`, expected `{}`",
                        show_bytes(&one.body),
                        show_bytes(&expected_body)
                    ));
                }
                if let Some(cl) = one.header("content-length") {
                    if cl.trim().parse::<usize>().ok() != Some(one.body.len()) {
                        bad.push(format!(
                            "upstream content-length {cl} for {} bytes",
                            one.body.len()
                        ));
                    }
                }
                let path = upstream_path(&sent.wire);
                if one.method != sent.wire.method || one.path != path {
                    bad.push(format!(
                        "upstream saw {} {}, expected {} {path}",
                        one.method, one.path, sent.wire.method
                    ));
                }
                let shadow = one.header("x-aegis-shadow-decision");
                if r.mode == Mode::Shadow {
                    if shadow.is_some_and(|v| v != want.decision) {
                        bad.push(format!("x-aegis-shadow-decision `{shadow:?}`"));
                    }
                    if shadow.is_none() && (holds_headers || r.headers_only) {
                        bad.push("shadow mode without x-aegis-shadow-decision".into());
                    }
                } else if shadow.is_some() {
                    bad.push("x-aegis-shadow-decision in enforce mode".into());
                }
            }
            other => bad.push(format!(
                "expected the upstream to receive the request once, it did {} time(s)",
                other.len()
            )),
        }
    }

    // The case's own expectations, where the clock does not matter.
    if diverges {
        // Its `expect:` describes the engine's reason; counted in `known`.
    } else if r.clock_independent {
        tally.expectations_checked += 1;
        for m in check(&sent.case.expect, &got) {
            bad.push(format!("expectation: {m}"));
        }
    } else {
        tally.clock_dependent += 1;
    }
    bad
}

/// Expected `aegis_decision_total` and `aegis_policy_violation_total`
/// series from the references, label values cleaned like the filter does.
pub fn expected_metrics(sent: &[Sent]) -> BTreeMap<String, BTreeMap<Vec<(String, String)>, u64>> {
    let mut out: BTreeMap<String, BTreeMap<Vec<(String, String)>, u64>> = BTreeMap::new();
    // Requests Envoy refuses itself never reach the filter.
    for s in sent.iter().filter(|s| !s.envoy_rejects()) {
        let o = &s.reference.now;
        let mode = match s.reference.mode {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        };
        let agent = label_value(o.agent.as_deref());
        let tool = label_value(o.tool.as_deref());
        let decision = o.decision.clone();
        let key = vec![
            ("agent".to_string(), agent.clone()),
            ("decision".to_string(), decision.clone()),
            ("mode".to_string(), mode.to_string()),
            ("tool".to_string(), tool.clone()),
        ];
        *out.entry("aegis_decision_total".into())
            .or_default()
            .entry(key)
            .or_default() += 1;
        if matches!(decision.as_str(), "deny" | "approval_needed") {
            let key = vec![
                ("agent".to_string(), agent),
                ("decision".to_string(), decision),
                ("mode".to_string(), mode.to_string()),
                ("rule".to_string(), label_value(o.rule.as_deref())),
                ("tool".to_string(), tool),
            ];
            *out.entry("aegis_policy_violation_total".into())
                .or_default()
                .entry(key)
                .or_default() += 1;
        }
    }
    out
}

/// A metric label value as the filter writes it (`filter/README.md`):
/// `-` when missing, characters outside `A-Za-z0-9-_./#:@+` as `_`.
pub fn label_value(v: Option<&str>) -> String {
    match v {
        None => "-".into(),
        Some(s) => s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_./#:@+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

/// The same two metrics as Envoy shows them.
pub fn observed_metrics(
    prometheus: &str,
) -> BTreeMap<String, BTreeMap<Vec<(String, String)>, u64>> {
    let mut out: BTreeMap<String, BTreeMap<Vec<(String, String)>, u64>> = BTreeMap::new();
    for s in crate::prom::parse(prometheus) {
        if s.name != "aegis_decision_total" && s.name != "aegis_policy_violation_total" {
            continue;
        }
        if s.value == 0.0 {
            continue;
        }
        let key: Vec<(String, String)> = s.labels.clone().into_iter().collect();
        // Counters: whole numbers.
        let n = s.value as u64;
        *out.entry(s.name.clone())
            .or_default()
            .entry(key)
            .or_default() += n;
    }
    out
}

/// Waits for the access-log lines of `sent` and judges every case.
/// Returns the failures, one line each.
pub fn judge_all(
    envoy: &crate::envoy::Envoy,
    upstream: &EchoServer,
    sent: &[Sent],
    holds_headers: bool,
    known: &[Known],
    tally: &mut Tally,
) -> Result<Vec<String>> {
    // Requests Envoy refuses may have no access-log line (or one without
    // the id): only the others are waited for.
    let ids: Vec<String> = sent
        .iter()
        .filter(|s| !s.envoy_rejects())
        .map(|s| s.request_id.clone())
        .collect();
    let mut logs = envoy.access_log_for(&ids, Duration::from_secs(15))?;
    for line in envoy.access_log() {
        if let Some(id) = line.get("x_request_id").and_then(Value::as_str) {
            if !logs.contains_key(id) && sent.iter().any(|s| s.request_id == id) {
                logs.insert(id.to_string(), line);
            }
        }
    }
    let mut failures = Vec::new();
    for s in sent {
        let up = upstream.with_id(&s.request_id);
        let log = logs.get(&s.request_id);
        let problems = if s.envoy_rejects() {
            judge_reject(s, log, &up, tally)
        } else {
            match log {
                Some(log) => judge(s, log, &up, holds_headers, known, tally),
                None => vec!["no access-log line".to_string()],
            }
        };
        for b in problems {
            failures.push(format!("{}: {b}", s.label()));
        }
    }
    Ok(failures)
}
