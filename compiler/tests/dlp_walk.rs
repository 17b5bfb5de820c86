//! With DLP on a JSON tool, `decide` scans the strings during the walk that
//! reads the parameters. Whatever the body, what it finds and writes must be
//! exactly what the standalone scanner finds and writes for that body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use aegis_compiler::frontend::load_sources;
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::builder::dlp::build_dlp;
use aegis_engine::unstable::dlp::{Outcome, Scanner, Scratch as DlpScratch};
use aegis_engine::{
    BodyKind, Bundle, Caller, Detector, DlpAction, Reason, Request, Scratch, Verdict,
};

fn policy(action: &str) -> String {
    format!(
        r#"kind: ToolCatalog
tools:
  - name: notes
    hosts: [notes.test]
    body: json
    actions:
      - name: create
        method: POST
        path: /v1/notes
---
agent: writer
egress:
  allow_hosts: [notes.test]
dlp:
  detectors: [ssn, credit_card, email, phone, dob, iban, aws_access_key, api_key, private_key, jwt]
  action: {action}
allowed_tools:
  - name: notes
    actions: [create]
    conditions:
      title: {{matches: "^[A-Za-z0-9 ]{{0,40}}$"}}
"#
    )
}

fn bundle(action: &str) -> Bundle {
    let loaded = load_sources(&[("p.yaml".into(), policy(action))], None).unwrap();
    let bytes = compile(&loaded.policy, &BuildOptions::default(), None).unwrap();
    Bundle::load(&bytes, &[]).unwrap()
}

/// Deterministic pieces of JSON, some with PII in values, keys, numbers
/// and escapes.
const PIECES: [&str; 14] = [
    r#""text": "call 555-867-5309 tomorrow""#,
    r#""ssn": "123-45-6789""#,
    r#""card": 4111111111111111"#,
    r#""esc": "\u0031\u0032\u0033-45-6789 and \n more""#,
    r#""jane.doe@example.com": true"#,
    r#""n": [1, 2.5, -3e2, {"deep": "4111 1111 1111 1111"}]"#,
    r#""iban": "GB82WEST12345698765432""#,
    r#""plain": "nothing to see here at all""#,
    r#""quote": "she said \"hi\" \\ ok""#,
    r#""dob": "born 1984-03-07""#,
    r#""aws": "AKIAIOSFODNN7EXAMPLE""#,
    r#""empty": """#,
    r#""nested": {"a": {"b": ["x", "y@z.io"]}}"#,
    r#""num": 123456789"#,
];

fn bodies() -> Vec<String> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::new();
    for i in 0..400 {
        let n = 1 + (next() % 6) as usize;
        let mut fields: Vec<String> = Vec::new();
        // Field names must stay unique in an object.
        for j in 0..n {
            let piece = PIECES[(next() % PIECES.len() as u64) as usize];
            let (key, value) = piece.split_once(':').unwrap();
            let key = format!("{}_{j}\"", key.trim_end_matches('"'));
            fields.push(format!("{key}:{value}"));
        }
        let title = if i % 5 == 0 { "bad title!" } else { "ok title" };
        fields.push(format!(r#""title": "{title}""#));
        out.push(format!("{{{}}}", fields.join(", ")));
    }
    out
}

#[test]
fn one_walk_finds_and_writes_what_the_scanner_does() {
    let mut compared = 0;
    for (action, dlp_action) in [
        ("redact", DlpAction::Redact),
        ("mask", DlpAction::Mask),
        ("deny", DlpAction::Deny),
    ] {
        let b = bundle(action);
        let spec = build_dlp(&Detector::ALL, &[], dlp_action, [0; 32]).unwrap();
        let scanner = Scanner::load(&spec).unwrap();
        let mut scratch = Scratch::for_bundle(&b);
        let headers = [("content-type", "application/json")];
        for body in bodies() {
            let req = Request {
                method: "POST",
                authority: "notes.test",
                path: "/v1/notes",
                headers: &headers[..],
                body: Some(body.as_bytes()),
            };
            let caller = Caller::Given {
                agent: "writer",
                tenant: None,
            };
            let d = b.decide(&req, caller, 0, &mut scratch);
            let mut alone = DlpScratch::new();
            let outcome = scanner
                .scan(BodyKind::Json, body.as_bytes(), 32, &mut alone)
                .unwrap();
            if body.contains("bad title") {
                assert_eq!(d.verdict, Verdict::Deny, "{body}");
                assert!(
                    matches!(d.reason, Reason::ConditionFailed { .. }),
                    "{body}: {}",
                    d.reason
                );
                continue;
            }
            match outcome {
                Outcome::Clean => assert_eq!(d.verdict, Verdict::Allow, "{body}"),
                Outcome::Found { rewritten: true } => {
                    assert_eq!(d.verdict, Verdict::Sanitize, "{body}");
                    assert_eq!(
                        String::from_utf8_lossy(&scratch.dlp.out),
                        String::from_utf8_lossy(&alone.out),
                        "{action}: {body}"
                    );
                }
                Outcome::Found { rewritten: false } => {
                    assert_eq!(d.verdict, Verdict::Deny, "{body}");
                    assert!(matches!(d.reason, Reason::DlpDenied { .. }), "{body}");
                }
            }
            assert_eq!(scratch.dlp.counts, alone.counts, "{action}: {body}");
            compared += 1;
        }
    }
    assert!(compared > 900, "only {compared} bodies compared");
}
