//! The case corpus (`policies/**/*.cases.yaml`, DESIGN.md section 8)
//! through a real Envoy.
//!
//! A case that names its agent directly (`agent:`) has no token, but a
//! proxy only believes tokens. So each policy folder is copied and given an
//! identity this harness can issue tokens for: a generated `kind: Identity`
//! document when the folder has none, or one more trusted key in the
//! folder's own Identity document. Every such case then carries a fresh
//! token for its agent and tenant ([`aegis_compiler::token::issue`]).
//!
//! Envoy judges at the real clock, which a test cannot set. The reference
//! for every case is therefore [`run_case`] at the real clock on the very
//! bundle inside the blob; a case's own expectations (`expect:`) are
//! checked through Envoy only where the case's clock (`now:`) and the real
//! clock give the same verdict (e.g. not for the recorded tokens of
//! `policies/mssp`, whose one-hour lifetime has passed). Those are counted.

use crate::blob::{self, key_b64, Built};
use crate::client::{self, Req, Resp};
use crate::upstream::{EchoServer, Recorded, ECHO_HEADER};
use crate::{err, repo_root, Result};
use aegis_compiler::cases::{load_cases, Case};
use aegis_compiler::run::{check, now_unix, run_case, split_url, Outcome};
use aegis_compiler::token::{issue, TokenRequest};
use aegis_engine::bundle::Bundle;
use aegis_engine::eval::{Caller, Request, Scratch, Verdict};
use aegis_engine::types::Mode;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A folder of policies with case files.
#[derive(Debug, Clone)]
pub struct Folder {
    /// Path under `policies/`, e.g. `finance`.
    pub name: String,
    pub dir: PathBuf,
    pub case_files: Vec<PathBuf>,
}

/// Every folder under `policies/` that holds a `*.cases.yaml`.
pub fn folders() -> Result<Vec<Folder>> {
    let root = repo_root().join("policies");
    Ok(
        aegis_compiler::cases::case_groups(std::slice::from_ref(&root))
            .into_iter()
            .map(|(dir, case_files)| {
                let name = dir
                    .strip_prefix(&root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| dir.display().to_string());
                Folder {
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
        .map_err(|e| err(format!("policies/{}: {e}", folder.name)))?;
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
        if !is_yaml || aegis_compiler::cases::is_cases_file(&f) {
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

    /// The request an agent sends for `case`, or why it cannot be sent.
    pub fn wire_request(&self, case: &Case, request_id: &str) -> std::result::Result<Req, String> {
        let (authority, path) = split_url(&case.request.url);
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let mut headers = case.request.headers.clone();
        if let Some(agent) = &case.agent {
            if let Some(why) = &self.issuer.unusable {
                return Err(why.clone());
            }
            if headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                return Err("the case gives an agent and an authorization header".into());
            }
            headers.push((
                "authorization".into(),
                format!("Bearer {}", self.token(agent, case.tenant.as_deref())),
            ));
        }
        headers.push(("x-request-id".into(), request_id.to_string()));
        Ok(Req {
            method: case.request.method.clone(),
            authority: authority.to_string(),
            path,
            headers,
            body: case.request.body.as_ref().map(|b| b.as_bytes().to_vec()),
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
pub fn reference(bundle: &Bundle, case: &Case, wire: &Req) -> Reference {
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
    let req = Request {
        method: &wire.method,
        authority: &wire.authority,
        path: &wire.path,
        headers: wire.headers.as_slice(),
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

/// One case sent through Envoy.
pub struct Sent {
    pub folder: String,
    pub case: Case,
    pub request_id: String,
    pub wire: Req,
    pub reference: Reference,
    pub response: Resp,
}

/// A difference between Envoy and the engine that is understood and
/// tracked: the verdict must still agree, Envoy's reason must contain
/// `envoy_reason_contains`, and once the two agree again the entry fails
/// as stale so it gets removed.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub folder: &'static str,
    pub case: &'static str,
    pub envoy_reason_contains: &'static str,
    pub why: &'static str,
}

/// Counts for the report.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: usize,
    /// Expectations (`expect:`) checked through Envoy.
    pub expectations_checked: usize,
    /// Sent and compared with the engine, but the case's clock differs
    /// from the real one in outcome, so its `expect:` was not applied.
    pub clock_dependent: usize,
    /// Not sent at all, with the reasons.
    pub skipped: Vec<String>,
    /// Cases that matched a [`Known`] divergence.
    pub known: Vec<String>,
}

/// Sends every case of `prep` to the listener on `port`.
pub fn send_all(
    prep: &Prepared,
    port: u16,
    id_prefix: &str,
    tally: &mut Tally,
) -> Result<Vec<Sent>> {
    let mut out = Vec::new();
    for (i, case) in prep.cases.iter().enumerate() {
        let request_id = format!("{id_prefix}-{}-{i}", prep.folder.name.replace('/', "-"));
        let wire = match prep.wire_request(case, &request_id) {
            Ok(w) => w,
            Err(why) => {
                tally.skipped.push(format!(
                    "policies/{}: `{}`: {why}",
                    prep.folder.name, case.name
                ));
                continue;
            }
        };
        let reference = reference(&prep.built.bundle, case, &wire);
        let response = client::send(port, &wire).map_err(|e| {
            err(format!(
                "policies/{}: `{}`: {e}",
                prep.folder.name, case.name
            ))
        })?;
        tally.sent += 1;
        out.push(Sent {
            folder: prep.folder.name.clone(),
            case: case.clone(),
            request_id,
            wire,
            reference,
            response,
        });
    }
    Ok(out)
}

fn log_str(log: &Value, key: &str) -> Option<String> {
    match log.get(key) {
        Some(Value::String(s)) if s != "-" => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The outcome Envoy produced, from its access log (filter state) and the
/// body the upstream received.
pub fn observed(sent: &Sent, log: &Value, upstream: &[Recorded]) -> Outcome {
    let decision = log_str(log, "decision").unwrap_or_default();
    let body = (decision == "sanitize")
        .then(|| {
            upstream
                .iter()
                .find(|r| r.complete)
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        })
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
    }
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
    let got = observed(sent, log, upstream);
    let resp = &sent.response;
    let mut want = r.now.clone();
    let mut diverges = false;
    if let Some(k) = known
        .iter()
        .find(|k| k.folder == sent.folder && k.case == sent.case.name)
    {
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
                "policies/{}: `{}`: Envoy says `{}`: {}",
                sent.folder, sent.case.name, got.reason, k.why
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
        let expected_status = if want.reason.contains("max_body_bytes") {
            413
        } else if want.reason.starts_with("internal error") {
            500
        } else {
            403
        };
        if resp.status != expected_status {
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
                let expect = serde_json::json!({
                    "decision": want.decision,
                    "reason": want.reason,
                    "rule": want.rule,
                    "policy_version": want.policy_version,
                    "request_id": sent.request_id,
                });
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
        if resp.header("x-aegis-decision").is_some() {
            bad.push("x-aegis-decision on a forwarded request".into());
        }
        match complete.as_slice() {
            [one] => {
                let sent_body = sent.wire.body.clone().unwrap_or_default();
                let expected_body = match (&r.mode, want.decision.as_str(), &want.body) {
                    (Mode::Enforce, "sanitize", Some(b)) => b.as_bytes().to_vec(),
                    _ => sent_body,
                };
                if one.body != expected_body {
                    bad.push(format!(
                        "upstream body `{}`, expected `{}`",
                        String::from_utf8_lossy(&one.body),
                        String::from_utf8_lossy(&expected_body)
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
                if one.method != sent.wire.method || one.path != sent.wire.path {
                    bad.push(format!("upstream saw {} {}", one.method, one.path));
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
    for s in sent {
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
    let ids: Vec<String> = sent.iter().map(|s| s.request_id.clone()).collect();
    let logs = envoy.access_log_for(&ids, Duration::from_secs(15))?;
    let mut failures = Vec::new();
    for s in sent {
        let Some(log) = logs.get(&s.request_id) else {
            failures.push(format!(
                "policies/{}: `{}`: no access-log line",
                s.folder, s.case.name
            ));
            continue;
        };
        let up = upstream.with_id(&s.request_id);
        for b in judge(s, log, &up, holds_headers, known, tally) {
            failures.push(format!("policies/{}: `{}`: {b}", s.folder, s.case.name));
        }
    }
    Ok(failures)
}
