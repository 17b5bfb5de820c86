//! The filter's behaviour on the wire, through the real blob: plugin
//! configuration, signatures, the bundle given in the configuration, body
//! limits, malformed bodies, chunked bodies, sanitize, shadow mode, held or
//! forwarded headers, filter state and metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_engine::ir;
use aegis_host_tests::policy::{self, Built, Issuer};
use aegis_host_tests::{
    level, Clock, Error, Host, HttpRequest, MetricKind, Outcome, Plugin, PluginOptions,
};
use ed25519_dalek::SigningKey;
use std::sync::OnceLock;

const CATALOG: &str = r#"
kind: ToolCatalog
tools:
  - name: notes
    hosts: [notes.example.com]
    body: json
    actions:
      - {name: create_note, method: POST, path: /v1/notes}
      - {name: list_notes, method: GET, path: /v1/notes}
      - {name: delete_note, method: DELETE, path: "/v1/notes/{id}"}
"#;

/// `scribe` may list notes and create them with priority <= 3; SSNs in
/// what it sends are redacted. `watcher` has the same rules in shadow mode.
const AGENTS: &str = r#"
agent: scribe
egress: {allow_hosts: [notes.example.com]}
dlp: {detectors: [ssn], action: redact}
allowed_tools:
  - {name: notes, actions: [list_notes]}
  - {name: notes, actions: [create_note], conditions: {priority: {le: 3}}}
---
agent: watcher
mode: shadow
egress: {allow_hosts: [notes.example.com]}
dlp: {detectors: [ssn], action: redact}
allowed_tools:
  - {name: notes, actions: [create_note], conditions: {priority: {le: 3}}}
"#;

const URL: &str = "https://notes.example.com/v1/notes";

fn test_policy(version: &str) -> ir::Policy {
    let mut p =
        policy::load_sources(&[("catalog.yaml", CATALOG), ("agents.yaml", AGENTS)]).unwrap();
    p.version = version.to_string();
    p
}

/// One blob shared by the tests that need no other.
struct Fixture {
    key: SigningKey,
    issuer: Issuer,
    built: Built,
    host: Host,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut p = test_policy("v-embedded");
        let (issuer, _) = Issuer::trusted_by(&mut p).unwrap();
        let key = policy::new_key();
        let built = policy::build_blob(&p, &key).unwrap();
        let host = Host::new(&built.wasm).unwrap();
        Fixture {
            key,
            issuer,
            built,
            host,
        }
    })
}

fn token(issuer: &Issuer, agent: &str) -> String {
    format!("Bearer {}", issuer.token(agent, None, common::now_unix()))
}

fn post(issuer: &Issuer, agent: &str, body: &str) -> HttpRequest {
    HttpRequest::new("POST", URL)
        .header("authorization", &token(issuer, agent))
        .header("content-type", "application/json")
        .header("content-length", &body.len().to_string())
        .header("x-request-id", "req-42")
}

const HELD: &str = r#"{"allow_on_headers_stop_iteration": true}"#;

fn plugin(config: &str) -> Plugin {
    fixture().host.plugin(config).unwrap()
}

fn refused(host: &Host, config: &str) -> Vec<(u32, String)> {
    match host.plugin(config) {
        Err(Error::Refused { callback, logs }) => {
            assert_eq!(callback, "proxy_on_configure");
            logs
        }
        Err(e) => panic!("expected on_configure to refuse `{config}`, got {e}"),
        Ok(p) => panic!("on_configure accepted `{config}`; logs: {:?}", p.logs()),
    }
}

/// The single error line of a refused configuration.
fn rejection(logs: &[(u32, String)]) -> String {
    let errors: Vec<&(u32, String)> = logs.iter().filter(|(l, _)| *l >= level::ERROR).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {logs:?}");
    let line = errors[0].1.clone();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.starts_with("aegis: configuration rejected: "),
        "{line}"
    );
    line
}

fn assert_blocked(o: &Outcome, status: u32, decision: &str) -> serde_json::Value {
    let r = o
        .local_response
        .as_ref()
        .unwrap_or_else(|| panic!("expected a local reply: {o:?}"));
    assert_eq!(r.status, status, "{o:?}");
    assert_eq!(r.header("x-aegis-decision"), Some(decision));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!o.forwarded, "{o:?}");
    assert!(
        o.forwarded_body.is_empty(),
        "the upstream got a body: {o:?}"
    );
    assert_eq!(o.decision().as_deref(), Some(decision));
    let json = r.json();
    assert_eq!(json["decision"], decision);
    assert_eq!(json["request_id"], "req-42");
    json
}

// --- configuration -------------------------------------------------------

#[test]
fn vm_start_and_configure_log_versions() {
    let p = plugin("");
    let logs = p.logs();
    assert!(
        logs.iter().any(|(l, m)| *l == level::INFO
            && m.contains("aegis-filter")
            && m.contains("policy `v-embedded`")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(_, m)| m.starts_with("aegis: ready: ")),
        "{logs:?}"
    );
}

#[test]
fn bad_configuration_fails_configure_with_one_clear_line() {
    let host = &fixture().host;
    for (config, says) in [
        ("{", "EOF"),
        (r#"{"trusted": []}"#, "unknown field `trusted`"),
        ("[]", "must be a JSON object"),
        (
            r#"{"max_body_bytes": 0}"#,
            "`max_body_bytes` must be at least 1",
        ),
        (r#"{"trusted_keys": ["AAAA"]}"#, "`trusted_keys[0]`"),
        (r#"{"bundle": "@@@"}"#, "`bundle` is not base64"),
    ] {
        let line = rejection(&refused(host, config));
        assert!(line.contains(says), "`{config}`: {line}");
    }
}

#[test]
fn a_blob_signed_by_another_key_is_refused() {
    let f = fixture();
    let other = policy::new_key();
    let line = rejection(&refused(
        &f.host,
        &serde_json::json!({ "trusted_keys": [policy::public_key_b64(&other)] }).to_string(),
    ));
    assert!(line.contains("embedded bundle"), "{line}");
    assert!(line.contains("not trusted"), "{line}");
    // The signer itself, alone or among others, is accepted.
    for keys in [
        vec![policy::public_key_b64(&f.key)],
        vec![
            policy::public_key_b64(&other),
            policy::public_key_b64(&f.key),
        ],
    ] {
        f.host
            .plugin(&serde_json::json!({ "trusted_keys": keys }).to_string())
            .unwrap();
    }
}

#[test]
fn a_bundle_in_the_configuration_replaces_the_embedded_one() {
    use base64::Engine as _;
    let f = fixture();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    // The same agents, another version, and `scribe` may delete notes.
    let agents = AGENTS.replace(
        "  - {name: notes, actions: [list_notes]}",
        "  - {name: notes, actions: [list_notes, delete_note]}",
    );
    let mut p2 =
        policy::load_sources(&[("catalog.yaml", CATALOG), ("agents.yaml", &agents)]).unwrap();
    p2.version = "v-from-config".into();
    let (issuer, _) = Issuer::trusted_by(&mut p2).unwrap();
    let key = policy::new_key();
    let bundle = policy::compile_bundle(&p2, &key).unwrap();

    let config = serde_json::json!({
        "bundle": b64(&bundle),
        "trusted_keys": [policy::public_key_b64(&key)],
    })
    .to_string();
    let mut plugin = f.host.plugin(&config).unwrap();
    assert!(
        plugin
            .logs()
            .iter()
            .any(|(_, m)| m.contains("v-from-config") && m.contains("configuration bundle")),
        "{:?}",
        plugin.logs()
    );
    let delete = HttpRequest::new("DELETE", "https://notes.example.com/v1/notes/7")
        .header("authorization", &token(&issuer, "scribe"));
    let o = plugin.request(&delete, &[]).unwrap();
    assert!(o.forwarded, "{o:?}");
    assert_eq!(o.decision().as_deref(), Some("allow"));
    assert_eq!(
        o.property("aegis_policy_version").as_deref(),
        Some("v-from-config")
    );
    // The embedded bundle does not know that issuer, nor allow deleting.
    let mut embedded = plugin_for(f, "");
    let o = embedded.request(&delete, &[]).unwrap();
    assert_eq!(o.decision().as_deref(), Some("deny"));

    // A configuration bundle from an untrusted signer, or garbage, is refused.
    let untrusted = serde_json::json!({
        "bundle": b64(&bundle),
        "trusted_keys": [policy::public_key_b64(&f.key)],
    })
    .to_string();
    let line = rejection(&refused(&f.host, &untrusted));
    assert!(line.contains("from the configuration"), "{line}");
    let garbage = serde_json::json!({ "bundle": b64(b"not a bundle") }).to_string();
    let line = rejection(&refused(&f.host, &garbage));
    assert!(line.contains("from the configuration"), "{line}");
}

/// The parameter walk recurses once per level of JSON: a body as deep as
/// the limits allow (the ceiling, 128) is read inside the VM, one level
/// deeper is refused, and neither traps.
#[test]
fn the_deepest_body_the_limits_allow_is_read_in_the_vm() {
    let limits = "kind: Limits\nmax_json_depth: 128\nmax_params: 1024\n";
    let mut p = policy::load_sources(&[
        ("catalog.yaml", CATALOG),
        ("agents.yaml", AGENTS),
        ("limits.yaml", limits),
    ])
    .unwrap();
    p.version = "v-deep".into();
    let (issuer, _) = Issuer::trusted_by(&mut p).unwrap();
    let built = policy::build_blob(&p, &policy::new_key()).unwrap();
    let host = Host::new(&built.wasm).unwrap();
    // `priority` at the top level, then `n` nested arrays around an SSN.
    let body = |n: usize| {
        format!(
            r#"{{"priority":2,"text":{}"123-45-6789"{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let mut plugin = host.plugin("{}").unwrap();
    // The object is level 1: 127 arrays reach the limit.
    let deepest = body(127);
    let o = plugin
        .request(&post(&issuer, "scribe", &deepest), &[deepest.as_bytes()])
        .unwrap();
    assert_eq!(o.decision().as_deref(), Some("sanitize"), "{o:?}");
    assert!(o.forwarded, "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.forwarded_body),
        body(127).replace("123-45-6789", "[REDACTED:ssn]")
    );
    let deeper = body(128);
    let o = plugin
        .request(&post(&issuer, "scribe", &deeper), &[deeper.as_bytes()])
        .unwrap();
    let json = assert_blocked(&o, 403, "deny");
    let reason = json["reason"].as_str().unwrap();
    assert!(reason.contains("nested too deeply"), "{reason}");
}

fn plugin_for(f: &Fixture, config: &str) -> Plugin {
    f.host.plugin(config).unwrap()
}

#[test]
fn the_generic_filter_without_a_bundle_refuses_to_configure() {
    let generic = aegis_compiler::package::blob::generic_filter().unwrap();
    let host = Host::new(generic).unwrap();
    let line = rejection(&refused(&host, "{}"));
    assert!(line.contains("no policy bundle"), "{line}");
}

// --- verdicts on the wire -------------------------------------------------

#[test]
fn allow_forwards_the_request_untouched() {
    let f = fixture();
    for config in ["{}", HELD] {
        let mut p = plugin(config);
        let body = r#"{"priority":2,"text":"call back tomorrow"}"#;
        let req = post(&f.issuer, "scribe", body);
        let o = p.request(&req, &[body.as_bytes()]).unwrap();
        assert!(o.forwarded && o.local_response.is_none(), "{o:?}");
        assert_eq!(o.forwarded_body, body.as_bytes());
        assert_eq!(o.decision().as_deref(), Some("allow"));
        assert_eq!(
            o.property("aegis_rule").as_deref(),
            Some("scribe/notes/create_note#0")
        );
        assert_eq!(o.property("aegis_agent").as_deref(), Some("scribe"));
        assert_eq!(o.property("aegis_tool").as_deref(), Some("notes"));
        assert_eq!(o.property("aegis_action").as_deref(), Some("create_note"));
        assert_eq!(o.property("aegis_mode").as_deref(), Some("enforce"));
        assert_eq!(o.property("aegis_request_id").as_deref(), Some("req-42"));
        assert_eq!(o.forwarded_header("x-aegis-shadow-decision"), None);
    }
}

#[test]
fn a_request_without_a_body_is_decided_on_its_headers() {
    let f = fixture();
    let mut p = plugin("{}");
    let req = HttpRequest::new("GET", URL).header("authorization", &token(&f.issuer, "scribe"));
    let o = p.request(&req, &[]).unwrap();
    assert!(o.forwarded, "{o:?}");
    assert_eq!(o.actions, vec![("proxy_on_request_headers", 0)]);
    assert_eq!(o.decision().as_deref(), Some("allow"));
    // No token: denied at once, the upstream never sees the request.
    let o = p
        .request(
            &HttpRequest::new("GET", URL).header("x-request-id", "req-42"),
            &[],
        )
        .unwrap();
    let json = assert_blocked(&o, 403, "deny");
    assert!(!o.headers_upstream);
    assert!(json["reason"].as_str().unwrap().contains("token"), "{json}");
}

#[test]
fn a_token_is_judged_on_every_request_cached_or_not() {
    let f = fixture();
    let t0 = common::now_unix();
    // `Issuer::token` is valid for five minutes; the policy allows 60 s
    // of clock skew.
    let bearer = format!("Bearer {}", f.issuer.token("scribe", None, t0));
    let req = HttpRequest::new("GET", URL)
        .header("authorization", &bearer)
        .header("x-request-id", "req-42");
    for config in [r#"{}"#, r#"{"token_cache": {"entries": 0}}"#] {
        let mut p = f
            .host
            .plugin_with(PluginOptions {
                clock: Clock::at_unix_secs(t0),
                ..PluginOptions::new(config)
            })
            .unwrap();
        let cached = !config.contains("entries");
        assert_eq!(
            p.logs()
                .iter()
                .any(|(_, m)| m.contains("verified-token cache of 4096 tokens")),
            cached,
            "{config}: {:?}",
            p.logs()
        );
        for now in [t0, t0 + 200, t0 + 360] {
            p.set_clock(Clock::at_unix_secs(now));
            let o = p.request(&req, &[]).unwrap();
            assert_eq!(o.decision().as_deref(), Some("allow"), "{config} at {now}");
            assert_eq!(o.forwarded_header("authorization"), None);
        }
        p.set_clock(Clock::at_unix_secs(t0 + 361));
        let o = p.request(&req, &[]).unwrap();
        let json = assert_blocked(&o, 403, "deny");
        assert_eq!(
            json["reason"], "invalid agent token: token expired",
            "{config}"
        );
        // Another token of the same agent, still valid, passes.
        let fresh = format!("Bearer {}", f.issuer.token("scribe", None, t0 + 300));
        let o = p
            .request(
                &HttpRequest::new("GET", URL).header("authorization", &fresh),
                &[],
            )
            .unwrap();
        assert_eq!(o.decision().as_deref(), Some("allow"), "{config}");
    }
}

#[test]
fn deny_answers_403_with_the_decision_json() {
    let f = fixture();
    for config in ["{}", HELD] {
        let mut p = plugin(config);
        let body = r#"{"priority":9}"#;
        let o = p
            .request(&post(&f.issuer, "scribe", body), &[body.as_bytes()])
            .unwrap();
        let json = assert_blocked(&o, 403, "deny");
        assert_eq!(json["rule"], "scribe/notes/create_note#0");
        assert_eq!(json["policy_version"], "v-embedded");
        assert!(
            json["reason"].as_str().unwrap().contains("`priority`"),
            "{json}"
        );
        assert_eq!(
            json.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "decision",
                "error",
                "policy_version",
                "reason",
                "request_id",
                "rule"
            ]
        );
        // The object REST SDKs turn into their permission error.
        assert_eq!(json["error"]["type"], "permission_error");
        assert_eq!(json["error"]["code"], "deny");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with(json["reason"].as_str().unwrap()),
            "{json}"
        );
        if config == HELD {
            // Envoy held the headers: nothing reached the upstream.
            assert!(!o.headers_upstream, "{o:?}");
        } else {
            // Istio: the headers were already upstream; the local reply
            // resets that request, which never gets the body.
            assert!(o.headers_upstream, "{o:?}");
        }
    }
}

#[test]
fn the_engine_and_the_filter_agree_on_a_malformed_json_body() {
    let f = fixture();
    let bundle = f.built.load_bundle().unwrap();
    let body = r#"{"priority": 2, "text": "unterminated"#;
    for config in ["{}", HELD] {
        let mut p = plugin(config);
        let o = p
            .request(&post(&f.issuer, "scribe", body), &[body.as_bytes()])
            .unwrap();
        let json = assert_blocked(&o, 403, "deny");
        let reason = json["reason"].as_str().unwrap();
        assert!(reason.contains("malformed json"), "{reason}");
        // The same sentence the engine gives.
        let native = native_decision(&bundle, &f.issuer, "scribe", body);
        assert_eq!(reason, native.reason);
    }
}

fn native_decision(
    bundle: &aegis_engine::Bundle,
    issuer: &Issuer,
    agent: &str,
    body: &str,
) -> aegis_cases::runner::Outcome {
    let case = aegis_compiler::case_file::parse_cases(
        "inline.cases.yaml",
        &serde_json::json!([{
            "name": "inline",
            "request": {
                "method": "POST",
                "url": URL,
                "headers": {
                    "authorization": token(issuer, agent),
                    "content-type": "application/json",
                },
                "body": body,
            },
            "expect": {"decision": "deny"},
        }])
        .to_string(),
    )
    .unwrap();
    let mut scratch = aegis_engine::Scratch::new();
    aegis_cases::runner::run_case(bundle, &case[0], &mut scratch)
}

#[test]
fn sanitize_rewrites_the_forwarded_body_and_fixes_content_length() {
    let f = fixture();
    let body = r#"{"priority":1,"text":"SSN 123-45-6789 on file"}"#;
    let rewritten = r#"{"priority":1,"text":"SSN [REDACTED:ssn] on file"}"#;
    // Headers forwarded at once: no length (Envoy frames the body). Headers
    // held: the rewritten body's length, set while they are still held.
    let new_length = rewritten.len().to_string();
    for (config, length) in [("{}", None), (HELD, Some(new_length.as_str()))] {
        let mut p = plugin(config);
        let req = post(&f.issuer, "scribe", body);
        assert!(req.headers.iter().any(|(k, _)| k == "content-length"));
        let o = p.request(&req, &[body.as_bytes()]).unwrap();
        assert!(o.forwarded, "{o:?}");
        assert_eq!(o.decision().as_deref(), Some("sanitize"));
        assert_eq!(
            String::from_utf8(o.forwarded_body.clone()).unwrap(),
            rewritten
        );
        assert_eq!(o.forwarded_header("content-length"), length, "{o:?}");
        assert!(o.late_header_edits.is_empty(), "{o:?}");
    }
}

#[test]
fn shadow_mode_forwards_and_tells_the_upstream() {
    let f = fixture();
    let body = r#"{"priority":9,"text":"SSN 123-45-6789"}"#;
    // Headers held: the body verdict still makes it into a request header.
    let mut p = plugin(HELD);
    let o = p
        .request(&post(&f.issuer, "watcher", body), &[body.as_bytes()])
        .unwrap();
    assert!(o.forwarded && o.local_response.is_none(), "{o:?}");
    assert_eq!(o.forwarded_body, body.as_bytes(), "shadow never rewrites");
    assert_eq!(o.forwarded_header("x-aegis-shadow-decision"), Some("deny"));
    assert_eq!(o.decision().as_deref(), Some("deny"));
    assert_eq!(o.property("aegis_mode").as_deref(), Some("shadow"));
    // A verdict on headers alone is added in either mode.
    for config in ["{}", HELD] {
        let mut p = plugin(config);
        let req = HttpRequest::new("POST", "https://elsewhere.example.org/v1/notes")
            .header("authorization", &token(&f.issuer, "watcher"));
        let o = p.request(&req, &[b"{}"]).unwrap();
        assert!(o.forwarded, "{o:?}");
        assert_eq!(o.forwarded_header("x-aegis-shadow-decision"), Some("deny"));
    }
    // Headers already upstream: the verdict is in filter state only, and
    // no header is edited after the fact.
    let mut p = plugin("{}");
    let o = p
        .request(&post(&f.issuer, "watcher", body), &[body.as_bytes()])
        .unwrap();
    assert!(o.forwarded, "{o:?}");
    assert_eq!(o.decision().as_deref(), Some("deny"));
    assert_eq!(o.forwarded_header("x-aegis-shadow-decision"), None);
    assert!(o.late_header_edits.is_empty(), "{o:?}");
}

// --- bodies ----------------------------------------------------------------

#[test]
fn an_oversized_body_is_refused_with_413() {
    let f = fixture();
    let body = format!(r#"{{"priority":1,"text":"{}"}}"#, "x".repeat(200));
    for config in [
        r#"{"max_body_bytes": 64}"#,
        r#"{"max_body_bytes": 64, "allow_on_headers_stop_iteration": true}"#,
    ] {
        let mut p = plugin(config);
        // Declared by content-length: refused in the headers callback.
        let o = p
            .request(&post(&f.issuer, "scribe", &body), &[body.as_bytes()])
            .unwrap();
        let json = assert_blocked(&o, 413, "deny");
        assert!(
            json["reason"].as_str().unwrap().contains("max_body_bytes"),
            "{json}"
        );
        assert!(!o.headers_upstream, "{o:?}");
        assert_eq!(o.actions.len(), 1, "{o:?}");
        // Not declared (chunked): refused once the buffer passes the limit.
        let mut req = post(&f.issuer, "scribe", &body);
        req.headers.retain(|(k, _)| k != "content-length");
        let chunks: Vec<&[u8]> = body.as_bytes().chunks(16).collect();
        let o = p.request(&req, &chunks).unwrap();
        assert_blocked(&o, 413, "deny");
        assert!(o.actions.len() < chunks.len() + 1, "stopped early: {o:?}");
    }
    // At the limit exactly: judged normally.
    let body = r#"{"priority":1}"#;
    let mut p = plugin(&format!(r#"{{"max_body_bytes": {}}}"#, body.len()));
    let o = p
        .request(&post(&f.issuer, "scribe", body), &[body.as_bytes()])
        .unwrap();
    assert!(o.forwarded, "{o:?}");
}

/// What matters of an outcome for comparing runs.
fn summary(o: &Outcome) -> (Option<u32>, Option<String>, Option<String>, Vec<u8>, bool) {
    (
        o.status(),
        o.decision(),
        o.property("aegis_reason"),
        o.forwarded_body.clone(),
        o.forwarded,
    )
}

#[test]
fn a_body_in_many_chunks_gets_the_verdict_of_one_chunk() {
    let f = fixture();
    let bodies = [
        r#"{"priority":1,"text":"fine"}"#,
        r#"{"priority":1,"text":"SSN 123-45-6789 and 078-05-1120"}"#,
        r#"{"priority":7}"#,
        r#"{"priority":"#,
    ];
    for config in ["{}", HELD] {
        let mut p = plugin(config);
        for body in bodies {
            let req = post(&f.issuer, "scribe", body);
            let whole = p.request(&req, &[body.as_bytes()]).unwrap();
            for size in [1, 2, 7] {
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
                let split = p.request(&req, &chunks).unwrap();
                assert_eq!(
                    summary(&split),
                    summary(&whole),
                    "{config}, `{body}` in {size}-byte chunks"
                );
                // Every chunk but the last was held.
                let body_actions: Vec<i32> = split
                    .actions
                    .iter()
                    .filter(|(c, _)| *c == "proxy_on_request_body")
                    .map(|(_, a)| *a)
                    .collect();
                assert_eq!(body_actions.len(), chunks.len(), "{split:?}");
            }
        }
    }
}

#[test]
fn trailers_end_the_body() {
    let f = fixture();
    let body = r#"{"priority":1,"text":"SSN 123-45-6789"}"#;
    let mut p = plugin(HELD);
    let mut req = post(&f.issuer, "scribe", body);
    req.trailers.push(("x-checksum".into(), "abc".into()));
    let o = p.request(&req, &[body.as_bytes()]).unwrap();
    assert_eq!(
        o.actions.last().map(|(c, _)| *c),
        Some("proxy_on_request_trailers")
    );
    assert_eq!(o.decision().as_deref(), Some("sanitize"));
    assert!(o.forwarded, "{o:?}");
    assert_eq!(
        o.forwarded_body,
        br#"{"priority":1,"text":"SSN [REDACTED:ssn]"}"#
    );
}

// --- metrics and request ids ---------------------------------------------

#[test]
fn decisions_are_counted_with_labels() {
    let f = fixture();
    let mut p = plugin("{}");
    let allow = r#"{"priority":1}"#;
    let deny = r#"{"priority":8}"#;
    for body in [allow, allow, deny] {
        p.request(&post(&f.issuer, "scribe", body), &[body.as_bytes()])
            .unwrap();
    }
    let counter = |name: &str| {
        let m = p
            .metric(name)
            .unwrap_or_else(|| panic!("no metric `{name}`: {:#?}", p.metrics()));
        assert_eq!(m.kind, MetricKind::Counter);
        m.value
    };
    assert_eq!(
        counter(
            "agent=.=scribe;.;tool=.=notes;.;decision=.=allow;.;mode=.=enforce;.;\
             aegis_decision_total"
        ),
        2
    );
    assert_eq!(
        counter(
            "agent=.=scribe;.;tool=.=notes;.;decision=.=deny;.;mode=.=enforce;.;\
             aegis_decision_total"
        ),
        1
    );
    assert_eq!(
        counter(
            "agent=.=scribe;.;tool=.=notes;.;rule=.=scribe/notes/create_note#0;.;\
             decision=.=deny;.;mode=.=enforce;.;aegis_policy_violation_total"
        ),
        1
    );
    let latency = p.metric("aegis_request_latency_ms").unwrap();
    assert_eq!(latency.kind, MetricKind::Histogram);
    assert_eq!(latency.samples.len(), 3);
    assert!(
        p.unsupported_calls().is_empty(),
        "{:?}",
        p.unsupported_calls()
    );
}

#[test]
fn request_ids_are_generated_when_missing() {
    let f = fixture();
    let mut p = plugin("{}");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let body = r#"{"priority":9}"#;
        let mut req = post(&f.issuer, "scribe", body);
        req.headers.retain(|(k, _)| k != "x-request-id");
        let o = p.request(&req, &[body.as_bytes()]).unwrap();
        let r = o.local_response.as_ref().unwrap();
        let id = r.json()["request_id"].as_str().unwrap().to_string();
        assert!(id.starts_with("aegis-"), "{id}");
        assert_eq!(o.property("aegis_request_id"), Some(id.clone()));
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}
