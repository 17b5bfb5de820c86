//! `Bundle::load` on hostile bytes: it never panics, refuses what it must,
//! and a bundle it accepts can be evaluated without panicking.
//!
//! Layout (from `engine/src/bundle.rs`): magic (8) "AEGISBND", format (2),
//! flags (2), payload length (4), sha256(revision + payload) (32),
//! revision (8), payload, then
//! optionally "AEGISSIG" (8), the signer's Ed25519 key (32) and the
//! signature (64) over everything before the block.
//!
//! With the `FLAG_DEFLATE` flag the payload is the inflated length (u32)
//! and a raw deflate stream of the model; without it, the model itself.
//!
//! Mutated payloads are re-sealed (length and hash rewritten) so that the
//! inflater, the postcard decoder, the validator and the DFA loaders are
//! reached, not only the hash check.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{
    Action, Agent, Approval, BodyKind, Detector, Dlp, DlpAction, Mode, Op, Policy, Predicate, Rule,
    Scalar, Tool,
};
use aegis_engine::jwt::{IdentityConfig, TrustedKey};
use aegis_engine::unstable::bundle::{
    encode, encode_with, Model, PredOp, Span, TSeg, FLAG_DEFLATE, FORMAT_VERSION, HEADER_LEN,
    MAX_MODEL_BYTES, REVISION_AT, SIG_BLOCK_LEN, SIG_MAGIC,
};
use aegis_engine::{
    Bundle, Caller, Envelope, LoadError, Request, Scratch, Verdict, BUNDLE_MAGIC as MAGIC,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://tokens.acme.test";
const AUD: &str = "aegis";

/// The key bundles are signed with.
fn bundle_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// The key agent tokens are signed with.
fn token_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn pred(param: &str, op: Op) -> Predicate {
    Predicate {
        param: param.into(),
        op,
    }
}

fn action(name: &str, method: &str, path: &str) -> Action {
    Action {
        name: name.into(),
        method: Some(method.into()),
        path: Some(path.into()),
        write: false,
    }
}

fn mcp_action(name: &str) -> Action {
    Action {
        name: name.into(),
        method: None,
        path: None,
        write: false,
    }
}

/// A policy that uses every part of the format: HTTP, form and MCP tools,
/// path templates, exact and wildcard hosts, tenants, egress lists,
/// condition regexes, DLP with a custom detector, an identity config.
fn policy() -> Policy {
    let rule = |id: &str, tool, action, when, conditions, approval| Rule {
        id: String::from(id),
        tool,
        action,
        when,
        conditions,
        approval,
        cost_usd: Some(0.01),
    };
    Policy {
        version: "load-1".into(),
        identity: Some(IdentityConfig {
            issuer: ISS.into(),
            audience: AUD.into(),
            keys: vec![TrustedKey {
                kid: "k1".into(),
                key: token_key().verifying_key().to_bytes(),
            }],
            agent_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_age_secs: Some(3600),
            skew_secs: 60,
            insecure_agent_header: false,
            token_header: "authorization".into(),
        }),
        tools: vec![
            Tool {
                name: "payments".into(),
                hosts: vec!["api.pay.test".into(), "*.pay.internal".into()],
                body: BodyKind::Json,
                mcp_path: None,
                gzip: false,
                filter_tools_list: true,
                actions: vec![
                    action("create", "POST", "/v1/pay"),
                    action("customer", "GET", "/v1/customers/{id}"),
                ],
            },
            Tool {
                name: "forms".into(),
                hosts: vec!["forms.test".into()],
                body: BodyKind::Form,
                mcp_path: None,
                gzip: false,
                filter_tools_list: true,
                actions: vec![action("submit", "POST", "/submit")],
            },
            Tool {
                name: "files".into(),
                hosts: vec!["mcp.files.internal".into()],
                body: BodyKind::Json,
                mcp_path: Some("/mcp".into()),
                gzip: false,
                filter_tools_list: true,
                actions: vec![mcp_action("read_file"), mcp_action("write_file")],
            },
        ],
        agents: vec![
            Agent {
                id: "acme/fin".into(),
                name: "fin".into(),
                tenant: Some("acme".into()),
                mode: Mode::Enforce,
                allow_hosts: Some(vec![
                    "api.pay.test".into(),
                    "*.pay.internal".into(),
                    "forms.test".into(),
                ]),
                budget: None,
                dlp: Some(Dlp {
                    detectors: vec![Detector::Ssn, Detector::Email],
                    custom: vec![("patient_id".into(), "PT-[0-9]{8}".into())],
                    action: DlpAction::Redact,
                }),
                rules: vec![
                    rule(
                        "acme/fin/payments/create#0",
                        0,
                        0,
                        vec![pred("meta.kind", Op::Eq(Scalar::Str("refund".into())))],
                        vec![],
                        Approval::Always,
                    ),
                    rule(
                        "acme/fin/payments/create#1",
                        0,
                        0,
                        vec![],
                        vec![
                            pred("amount", Op::Le(5000.0)),
                            pred(
                                "currency",
                                Op::In(vec![Scalar::Str("usd".into()), Scalar::Str("eur".into())]),
                            ),
                            pred("description", Op::Matches("^[A-Za-z0-9 ]{0,40}$".into())),
                        ],
                        Approval::OnFailure,
                    ),
                    rule(
                        "acme/fin/payments/customer#0",
                        0,
                        1,
                        vec![],
                        vec![pred("id", Op::Matches("^cus_".into()))],
                        Approval::Never,
                    ),
                    rule(
                        "acme/fin/forms/submit#0",
                        1,
                        0,
                        vec![],
                        vec![pred("card.last4", Op::NotMatches("[^0-9]".into()))],
                        Approval::Never,
                    ),
                ],
            },
            Agent {
                id: "coder".into(),
                name: "coder".into(),
                tenant: None,
                mode: Mode::Shadow,
                allow_hosts: None,
                budget: None,
                dlp: None,
                rules: vec![
                    rule(
                        "coder/files/read_file#0",
                        2,
                        0,
                        vec![],
                        vec![pred("path", Op::Matches("^/src/".into()))],
                        Approval::Never,
                    ),
                    rule(
                        "coder/files/write_file#0",
                        2,
                        1,
                        vec![],
                        vec![pred("path", Op::Exists)],
                        Approval::Always,
                    ),
                ],
            },
        ],
        limits: Default::default(),
    }
}

/// The revision the fixtures are built with: high bytes set, so that a
/// reader that dropped or swapped them would show.
const REVISION: u64 = 0x0102_0304_6553_f100;

fn options() -> BuildOptions {
    BuildOptions {
        revision: REVISION,
        ..BuildOptions::default()
    }
}

fn unsigned() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| compile(&policy(), &options(), None).expect("compile"))
}

fn signed() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| compile(&policy(), &options(), Some(&bundle_key())).expect("compile"))
}

fn trusted() -> [u8; 32] {
    bundle_key().verifying_key().to_bytes()
}

/// The payload as stored (compressed for compiled bundles).
fn stored(bundle: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(bundle[12..16].try_into().expect("len")) as usize;
    &bundle[HEADER_LEN..HEADER_LEN + len]
}

/// The model's encoding, inflated.
fn payload(bundle: &[u8]) -> Vec<u8> {
    let env = Envelope::parse(bundle).expect("envelope");
    env.model_bytes().expect("inflates").into_owned()
}

/// An unsigned, uncompressed bundle around `payload`, with a correct
/// length and hash.
fn seal(payload: &[u8]) -> Vec<u8> {
    seal_flags(payload, 0)
}

fn seal_flags(payload: &[u8], flags: u16) -> Vec<u8> {
    seal_revision(payload, flags, REVISION)
}

fn seal_revision(payload: &[u8], flags: u16, revision: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let hashed = [&revision.to_le_bytes()[..], payload].concat();
    out.extend_from_slice(&Sha256::digest(&hashed));
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Appends a signature block by `key` over `bundle`.
fn sign(mut bundle: Vec<u8>, key: &SigningKey) -> Vec<u8> {
    let sig = key.sign(&bundle);
    bundle.extend_from_slice(SIG_MAGIC);
    bundle.extend_from_slice(key.verifying_key().as_bytes());
    bundle.extend_from_slice(&sig.to_bytes());
    bundle
}

fn model() -> Model {
    Bundle::load(unsigned(), &[]).expect("load").model
}

/// Encodes a (possibly inconsistent) model as an unsigned bundle.
fn bundle_of(m: &Model) -> Vec<u8> {
    encode(m, REVISION, None).expect("encode")
}

fn token(agent: &str, tenant: &str) -> String {
    let header = r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#;
    let claims = serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": agent, "tenant": tenant,
        "iat": NOW - 10, "exp": NOW + 300,
    })
    .to_string();
    let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = token_key().sign(signed.as_bytes());
    format!("{signed}.{}", B64.encode(sig.to_bytes()))
}

/// Method, authority, path, headers, body, caller.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    Caller<'a>,
);

/// Judges a spread of requests: every tool, both callers. Used on bundles
/// that loaded after a mutation: they may judge anything, but must not
/// panic.
fn exercise(b: &Bundle) -> Vec<Verdict> {
    let bearer = format!("Bearer {}", token("fin", "acme"));
    let json: [(&str, &str); 1] = [("content-type", "application/json")];
    let form: [(&str, &str); 1] = [("content-type", "application/x-www-form-urlencoded")];
    let auth: [(&str, &str); 2] = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let fin = Caller::Given {
        agent: "acme/fin",
        tenant: None,
    };
    let coder = Caller::Given {
        agent: "coder",
        tenant: None,
    };
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "api.pay.test",
            "/v1/pay",
            &json,
            br#"{"amount": 1200, "currency": "usd", "description": "ok", "meta": {"kind": "x"}}"#,
            fin,
        ),
        (
            "POST",
            "api.pay.test",
            "/v1/pay",
            &json,
            br#"{"amount": 9000, "currency": "usd", "note": "ssn 123-45-6789"}"#,
            fin,
        ),
        (
            "POST",
            "x.pay.internal",
            "/v1/pay",
            &json,
            br#"{"meta": {"kind": "refund"}}"#,
            fin,
        ),
        (
            "GET",
            "api.pay.test",
            "/v1/customers/cus_42?expand=1",
            &json,
            b"",
            fin,
        ),
        (
            "POST",
            "forms.test",
            "/submit",
            &form,
            b"card%5Blast4%5D=4242&email=a%40b.example",
            fin,
        ),
        (
            "POST",
            "mcp.files.internal",
            "/mcp",
            &json,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/src/main.rs"}}}"#,
            coder,
        ),
        (
            "POST",
            "mcp.files.internal",
            "/mcp",
            &json,
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            coder,
        ),
        (
            "POST",
            "api.pay.test",
            "/v1/pay",
            &auth,
            br#"{"amount": 10, "currency": "eur", "description": "tok"}"#,
            Caller::FromRequest,
        ),
    ];
    let mut scratch = Scratch::new();
    let mut out = Vec::new();
    for (method, authority, path, headers, body, caller) in cases {
        for body in [Some(body), None] {
            let req = Request {
                method,
                authority,
                path,
                headers,
                body,
            };
            out.push(b.decide(&req, caller, NOW, &mut scratch).verdict);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Targeted cases

#[test]
fn real_bundles_load() {
    let b = Bundle::load(unsigned(), &[]).expect("unsigned");
    assert_eq!(b.policy_version(), "load-1");
    assert_eq!(b.signer, None);
    assert_eq!(b.revision(), REVISION);
    assert_eq!(
        b.hash.as_slice(),
        Sha256::digest([&REVISION.to_le_bytes()[..], stored(unsigned())].concat()).as_slice()
    );
    let v = exercise(&b);
    let with_body: Vec<Verdict> = v.iter().step_by(2).copied().collect();
    use Verdict::*;
    assert_eq!(
        with_body,
        [
            Allow,
            ApprovalNeeded,
            ApprovalNeeded,
            Allow,
            Sanitize,
            Allow,
            Allow,
            Allow
        ]
    );
    assert_eq!(v[7], NeedBody, "{v:?}");

    let b = Bundle::load(signed(), &[trusted()]).expect("signed, trusted");
    assert_eq!(b.signer, Some(trusted()));
    // Without trusted keys a signed bundle loads too (and says who signed).
    let b = Bundle::load(signed(), &[]).expect("signed, no trust");
    assert_eq!(b.signer, Some(trusted()));
    // One of several trusted keys is enough.
    let other = SigningKey::from_bytes(&[8u8; 32])
        .verifying_key()
        .to_bytes();
    assert!(Bundle::load(signed(), &[other, trusted()]).is_ok());
}

fn err(bytes: &[u8], trusted: &[[u8; 32]]) -> LoadError {
    Bundle::load(bytes, trusted).expect_err("must be refused")
}

#[test]
fn bad_magic() {
    for at in 0..8 {
        let mut b = unsigned().to_vec();
        b[at] ^= 0x20;
        assert_eq!(err(&b, &[]), LoadError::BadMagic);
    }
    let mut b = signed().to_vec();
    b[..8].copy_from_slice(b"AEGISSIG");
    assert_eq!(err(&b, &[]), LoadError::BadMagic);
    assert_eq!(err(&[0u8; HEADER_LEN], &[]), LoadError::BadMagic);
}

#[test]
fn wrong_version() {
    for v in [0u16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 0x0100, u16::MAX] {
        let mut b = unsigned().to_vec();
        b[8..10].copy_from_slice(&v.to_le_bytes());
        assert_eq!(err(&b, &[]), LoadError::UnsupportedVersion(v));
    }
}

#[test]
fn truncated() {
    for bundle in [unsigned(), signed()] {
        for n in 0..bundle.len() {
            if n == unsigned().len() {
                // A signed bundle without its signature block is a valid
                // unsigned bundle: only trusted keys make that matter.
                let b = Bundle::load(&bundle[..n], &[]).expect("unsigned part");
                assert_eq!(b.signer, None);
                assert_eq!(err(&bundle[..n], &[trusted()]), LoadError::Unsigned);
                continue;
            }
            let e = err(&bundle[..n], &[]);
            let want = if n < HEADER_LEN {
                LoadError::TooShort
            } else {
                LoadError::BadLength
            };
            assert_eq!(e, want, "prefix of {n} bytes");
        }
    }
}

#[test]
fn length_field_does_not_match() {
    let len = stored(unsigned()).len() as u32;
    for (bad, want) in [
        (len + 1, LoadError::BadLength),
        (u32::MAX, LoadError::BadLength),
        (len - 1, LoadError::HashMismatch),
        (0, LoadError::HashMismatch),
    ] {
        let mut b = unsigned().to_vec();
        b[12..16].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(err(&b, &[]), want, "length {bad}");
    }
    // Bytes after an unsigned bundle that are not a signature block.
    for extra in [1usize, 10, SIG_BLOCK_LEN - 1, SIG_BLOCK_LEN + 1] {
        let mut b = unsigned().to_vec();
        b.extend(std::iter::repeat_n(0u8, extra));
        assert_eq!(err(&b, &[]), LoadError::BadLength, "{extra} extra bytes");
    }
}

#[test]
fn hash_mismatch() {
    let n = unsigned().len();
    for at in [HEADER_LEN, HEADER_LEN + 1, n / 2, n - 1] {
        let mut b = unsigned().to_vec();
        b[at] ^= 1;
        assert_eq!(err(&b, &[]), LoadError::HashMismatch, "payload byte {at}");
    }
    for at in 16..REVISION_AT {
        let mut b = unsigned().to_vec();
        b[at] ^= 0x80;
        assert_eq!(err(&b, &[]), LoadError::HashMismatch, "hash byte {at}");
    }
    // The hash covers the revision: an unsigned bundle cannot be passed
    // off as a newer one either.
    for at in REVISION_AT..HEADER_LEN {
        let mut b = unsigned().to_vec();
        b[at] ^= 0x01;
        assert_eq!(err(&b, &[]), LoadError::HashMismatch, "revision byte {at}");
    }
}

#[test]
fn trust() {
    let wrong = SigningKey::from_bytes(&[8u8; 32])
        .verifying_key()
        .to_bytes();
    assert_eq!(err(signed(), &[wrong]), LoadError::UntrustedSigner);
    assert_eq!(err(unsigned(), &[trusted()]), LoadError::Unsigned);
    assert_eq!(err(unsigned(), &[wrong, trusted()]), LoadError::Unsigned);
    // Signed by someone else, who also fixed the hash after an edit.
    let mut p = payload(unsigned()).to_vec();
    let at = p.len() / 3;
    p[at] ^= 1;
    let forged = sign(seal(&p), &SigningKey::from_bytes(&[8u8; 32]));
    assert_eq!(err(&forged, &[trusted()]), LoadError::UntrustedSigner);
}

#[test]
fn tampered_signature() {
    let n = signed().len();
    let sig_at = n - 64;
    for at in [sig_at, sig_at + 1, sig_at + 31, sig_at + 32, n - 1] {
        let mut b = signed().to_vec();
        b[at] ^= 0x01;
        assert_eq!(
            err(&b, &[trusted()]),
            LoadError::BadSignature,
            "sig byte {at}"
        );
        // A broken signature is refused even when no key is trusted.
        assert_eq!(err(&b, &[]), LoadError::BadSignature, "sig byte {at}");
    }
    // The embedded key replaced by another valid key.
    let mut b = signed().to_vec();
    let other = SigningKey::from_bytes(&[8u8; 32])
        .verifying_key()
        .to_bytes();
    b[n - 96..n - 64].copy_from_slice(&other);
    assert_eq!(err(&b, &[]), LoadError::BadSignature);
    assert_eq!(err(&b, &[other]), LoadError::BadSignature);
    // ... by bytes that are not a curve point.
    let mut b = signed().to_vec();
    b[n - 96..n - 64].copy_from_slice(&[0xff; 32]);
    assert_eq!(err(&b, &[]), LoadError::BadSignature);
    // The block's magic.
    let mut b = signed().to_vec();
    b[n - SIG_BLOCK_LEN] ^= 0x20;
    assert_eq!(err(&b, &[trusted()]), LoadError::BadLength);
    // The signed part changed: header flags, payload.
    for at in [10, HEADER_LEN + 5] {
        let mut b = signed().to_vec();
        b[at] ^= 0x01;
        assert!(
            matches!(
                err(&b, &[trusted()]),
                LoadError::BadSignature | LoadError::HashMismatch
            ),
            "byte {at}"
        );
    }
    // The payload changed and re-sealed, the old signature kept.
    let mut p = payload(signed()).to_vec();
    p[0] ^= 1;
    let mut b = seal(&p);
    b.extend_from_slice(&signed()[n - SIG_BLOCK_LEN..]);
    assert_eq!(err(&b, &[trusted()]), LoadError::BadSignature);
    // Two signature blocks.
    let b = sign(signed().to_vec(), &bundle_key());
    assert_eq!(err(&b, &[trusted()]), LoadError::BadLength);
}

#[test]
fn revision_round_trips() {
    assert_eq!(Envelope::parse(unsigned()).unwrap().revision, REVISION);
    assert_eq!(
        Bundle::load(signed(), &[trusted()]).unwrap().revision(),
        REVISION
    );
    for revision in [0, 1, 1_765_000_000, u64::MAX] {
        let opts = BuildOptions {
            revision,
            ..BuildOptions::default()
        };
        let b = compile(&policy(), &opts, Some(&bundle_key())).unwrap();
        assert_eq!(Envelope::parse(&b).unwrap().revision, revision);
        let loaded = Bundle::load(&b, &[trusted()]).unwrap();
        assert_eq!(loaded.revision(), revision);
        // The revision is beside the model, not in it.
        assert_eq!(loaded.model, model());
        let plain = encode_with(&model(), revision, None, false).unwrap();
        assert_eq!(Bundle::load(&plain, &[]).unwrap().revision(), revision);
    }
}

#[test]
fn altered_revision_fails_the_signature() {
    let n = signed().len();
    for at in REVISION_AT..HEADER_LEN {
        // Only the revision changed: the hash no longer matches.
        let mut b = signed().to_vec();
        b[at] ^= 0x01;
        assert_eq!(err(&b, &[]), LoadError::HashMismatch, "revision byte {at}");
        assert_eq!(err(&b, &[trusted()]), LoadError::HashMismatch);
    }
    // A rollback attempt that also rewrites the hash (all but the
    // signature can be recomputed): the signature no longer matches, with
    // or without trusted keys.
    for revision in [0, REVISION - 1, REVISION + 1, u64::MAX] {
        let mut b = seal_revision(stored(signed()), FLAG_DEFLATE, revision);
        b.extend_from_slice(&signed()[n - SIG_BLOCK_LEN..]);
        assert_eq!(Envelope::parse(&b).err(), Some(LoadError::BadSignature));
        assert_eq!(err(&b, &[trusted()]), LoadError::BadSignature);
    }
    // The same bytes re-sealed with the right revision are the original.
    let mut b = seal_revision(stored(signed()), FLAG_DEFLATE, REVISION);
    b.extend_from_slice(&signed()[n - SIG_BLOCK_LEN..]);
    assert_eq!(b, signed());
    // Re-signing with another key gives a valid bundle, but not a trusted one.
    let forged = sign(
        seal_revision(stored(signed()), FLAG_DEFLATE, u64::MAX),
        &SigningKey::from_bytes(&[8u8; 32]),
    );
    assert_eq!(Bundle::load(&forged, &[]).unwrap().revision(), u64::MAX);
    assert_eq!(err(&forged, &[trusted()]), LoadError::UntrustedSigner);
}

#[test]
fn budgets_are_found_by_tenant_and_name() {
    use aegis_engine::ir::Budget;
    use aegis_engine::AgentBudget;
    let mut p = policy();
    p.agents[0].budget = Some(Budget {
        daily_usd: Some(25.5),
        rps: Some(2.0),
    });
    // The same name without a tenant, a budget of its own.
    let mut other = p.agents[0].clone();
    other.id = "fin".into();
    other.tenant = None;
    other.budget = Some(Budget {
        daily_usd: Some(3.0),
        rps: None,
    });
    for r in &mut other.rules {
        r.id = r.id.replacen("acme/", "", 1);
    }
    p.agents.push(other);
    let b = Bundle::load(&compile(&p, &options(), None).unwrap(), &[]).unwrap();
    assert_eq!(
        b.budget(Some("acme"), "fin"),
        Some(AgentBudget {
            daily_usd: Some(25.5),
            rps: Some(2.0)
        })
    );
    assert_eq!(
        b.budget(None, "fin"),
        Some(AgentBudget {
            daily_usd: Some(3.0),
            rps: None
        })
    );
    // An agent without a `budget:` block, and agents that do not exist.
    assert_eq!(b.budget(None, "coder"), None);
    assert_eq!(b.budget(Some("acme"), "coder"), None);
    assert_eq!(b.budget(Some("other"), "fin"), None);
    assert_eq!(b.budget(Some("acme"), "FIN"), None);
}

#[test]
fn undecodable_payloads() {
    let model = payload(unsigned());
    for p in [&b""[..], &[0u8; 1], &[0xff; 16], &model[..model.len() / 2]] {
        assert!(matches!(err(&seal(p), &[]), LoadError::Decode(_)), "{p:?}");
    }
    // Trailing bytes inside the payload are ignored by postcard's
    // `from_bytes`; what matters is that nothing panics.
    let mut p = payload(unsigned()).to_vec();
    p.extend_from_slice(b"trailing");
    let _ = Bundle::load(&seal(&p), &[]);
}

/// A compressed payload: inflated length + raw deflate of `model`.
fn deflated(model: &[u8], claimed: u32) -> Vec<u8> {
    let mut p = claimed.to_le_bytes().to_vec();
    p.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(model, 6));
    p
}

#[test]
fn compiled_bundles_are_compressed_and_load_like_stored_ones() {
    let env = Envelope::parse(unsigned()).unwrap();
    assert_eq!(env.flags, FLAG_DEFLATE);
    let model = payload(unsigned());
    assert!(
        stored(unsigned()).len() * 2 < model.len(),
        "stored {} bytes for a {}-byte model",
        stored(unsigned()).len(),
        model.len()
    );
    let plain = encode_with(&self::model(), REVISION, None, false).unwrap();
    assert_eq!(Envelope::parse(&plain).unwrap().flags, 0);
    assert_eq!(stored(&plain), &model[..]);
    assert_eq!(
        Bundle::load(&plain, &[]).unwrap().model,
        Bundle::load(unsigned(), &[]).unwrap().model
    );
    // Signed compressed bundles verify and load.
    let b = Bundle::load(signed(), &[trusted()]).unwrap();
    assert_eq!(b.policy_version(), "load-1");
}

#[test]
fn compressed_payloads_that_lie_are_refused() {
    let model = payload(unsigned());
    let n = model.len() as u32;
    let decode = |p: &[u8], flags: u16| match err(&seal_flags(p, flags), &[]) {
        LoadError::Decode(e) => e,
        other => panic!("expected a decode error, got {other:?}"),
    };
    // The honest one loads.
    Bundle::load(&seal_flags(&deflated(&model, n), FLAG_DEFLATE), &[]).unwrap();
    // Inflated length claimed too small, too large, absurd for the input.
    for claimed in [0, 1, n - 1, n + 1, 2 * n] {
        let e = decode(&deflated(&model, claimed), FLAG_DEFLATE);
        assert!(e.contains("compressed payload"), "{claimed}: {e}");
    }
    for claimed in [MAX_MODEL_BYTES + 1, u32::MAX] {
        let e = decode(&deflated(&model, claimed), FLAG_DEFLATE);
        assert!(
            e.contains(&format!("claims {claimed} inflated bytes")),
            "{e}"
        );
    }
    // A tiny stream may not claim a large output (deflate expands at most
    // 1032:1): refused before anything is allocated.
    let e = decode(&deflated(b"x", 10 << 20), FLAG_DEFLATE);
    assert!(e.contains("claims 10485760 inflated bytes from"), "{e}");
    // No room for the length; a truncated stream; bytes after the stream.
    let good = deflated(&model, n);
    assert!(decode(&good[..3], FLAG_DEFLATE).contains("no inflated length"));
    let e = decode(&good[..good.len() - 9], FLAG_DEFLATE);
    assert!(e.contains("does not match") || e.contains("corrupt"), "{e}");
    let mut extra = good.clone();
    extra.extend_from_slice(b"tail");
    assert!(decode(&extra, FLAG_DEFLATE).contains("does not match"));
    // Garbage where the deflate stream should be (long enough that the
    // length it claims is possible).
    let mut junk = n.to_le_bytes().to_vec();
    junk.resize(4 + 64 + n as usize / 1000, 0xff);
    assert!(decode(&junk, FLAG_DEFLATE).contains("corrupt"));
    // The flag cleared on a compressed payload: the model does not decode.
    decode(&good, 0);
    // Flags this build does not know.
    for flags in [2u16, 0x8000, FLAG_DEFLATE | 4] {
        assert_eq!(
            err(&seal_flags(&good, flags), &[]),
            LoadError::UnsupportedFlags(flags)
        );
    }
}

/// Every cross reference the validator promises to check, broken one at a
/// time in an otherwise valid model.
#[test]
fn inconsistent_models_are_invalid() {
    type Edit = fn(&mut Model);
    let edits: Vec<(&str, Edit)> = vec![
        ("agents unsorted", |m| m.agents.reverse()),
        ("hosts unsorted", |m| m.exact_hosts.reverse()),
        ("host tool", |m| m.exact_hosts[0].1.push(99)),
        ("wildcard tool", |m| m.wildcard_hosts[0].1.push(3)),
        ("table tool", |m| m.agents[0].table[0].tool = 9),
        ("table action", |m| m.agents[0].table[0].action = 9),
        ("table unsorted", |m| m.agents[0].table.reverse()),
        ("rule span", |m| {
            m.agents[0].table[0].rules = Span {
                start: 0,
                len: m.rules.len() as u32 + 1,
            }
        }),
        ("rule span overflow", |m| {
            m.agents[0].table[0].rules = Span {
                start: u32::MAX,
                len: u32::MAX,
            }
        }),
        ("pred span", |m| {
            m.rules[0].conds = Span {
                start: m.preds.len() as u32,
                len: 1,
            }
        }),
        ("pred slot", |m| {
            for p in &mut m.preds {
                p.slot = 63;
            }
        }),
        ("regex id", |m| {
            for p in &mut m.preds {
                p.op = PredOp::Matches(m.regexes.len() as u32);
            }
        }),
        ("dlp set", |m| {
            for a in &mut m.agents {
                a.dlp = Some(7);
            }
        }),
        ("template slot", |m| {
            m.tools[0].actions[1].template = vec![TSeg::Lit("v1".into()), TSeg::Param(64)]
        }),
        ("route action", |m| m.tools[0].route_actions[0] = 5),
        ("too many params", |m| {
            m.tools[0].params = (0..65).map(|i| vec![format!("p{i}")]).collect()
        }),
        ("route dfa", |m| {
            m.tools[0].routes = vec![1, 2, 3, 4, 5, 6, 7, 8]
        }),
        ("route dfa missing", |m| m.tools[0].routes.clear()),
        ("route dfa truncated", |m| {
            let n = m.tools[0].routes.len() / 2;
            m.tools[0].routes.truncate(n)
        }),
        ("regex dfa", |m| m.regexes[0] = b"not a dfa".to_vec()),
        ("regex dfa truncated", |m| {
            let n = m.regexes[0].len() - 1;
            m.regexes[0].truncate(n)
        }),
        ("identity key", |m| {
            if let Some(id) = &mut m.identity {
                id.keys[0].key = [0u8; 32];
            }
        }),
    ];
    let base = model();
    assert!(Bundle::load(&bundle_of(&base), &[]).is_ok());
    for (what, edit) in edits {
        let mut m = base.clone();
        edit(&mut m);
        match Bundle::load(&bundle_of(&m), &[]) {
            Err(LoadError::Invalid(_)) => {}
            Err(e) => panic!("{what}: refused, but as {e:?}"),
            Ok(b) => {
                exercise(&b);
                panic!("{what}: accepted");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Random inputs

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Overwrite(Index, Vec<u8>),
    /// Copies a range over another place (keeps structure-like bytes).
    Splice(Index, Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        3 => (any::<Index>(), prop_oneof![Just(0u8), Just(1), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()])
            .prop_map(|(i, x)| Mutation::Set(i, x)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        2 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Insert(_, v) | Mutation::Overwrite(_, v) = m {
            bytes.extend_from_slice(v);
        }
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::Flip(i, x) => bytes[i.index(n)] ^= x,
        Mutation::Set(i, x) => bytes[i.index(n)] = *x,
        Mutation::Truncate(i) => bytes.truncate(i.index(n)),
        Mutation::Insert(i, v) => {
            let at = i.index(n + 1);
            bytes.splice(at..at, v.iter().copied());
        }
        Mutation::Remove(i, k) => {
            let at = i.index(n);
            bytes.drain(at..(at + k).min(n));
        }
        Mutation::Overwrite(i, v) => {
            let at = i.index(n);
            for (k, b) in v.iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + k) {
                    *x = *b;
                }
            }
        }
        Mutation::Splice(a, b, k) => {
            let from = a.index(n);
            let to = b.index(n);
            let chunk: Vec<u8> = bytes[from..(from + k).min(n)].to_vec();
            for (j, c) in chunk.into_iter().enumerate() {
                if let Some(x) = bytes.get_mut(to + j) {
                    *x = c;
                }
            }
        }
    }
}

/// Loads, and when the bundle is accepted, judges requests with it.
fn load_and_use(bytes: &[u8], trusted: &[[u8; 32]]) -> Result<(), LoadError> {
    let b = Bundle::load(bytes, trusted)?;
    exercise(&b);
    Ok(())
}

/// Random edits of the model's index fields (the values the validator
/// must check), encoded back: either refused or usable.
#[derive(Debug, Clone)]
enum ModelEdit {
    RuleSpan(Index, bool, u32, u32),
    Slot(Index, u16),
    Regex(Index, u32),
    TableTool(Index, Index, u16),
    TableAction(Index, Index, u16),
    TableRules(Index, Index, u32, u32),
    Dlp(Index, Option<u32>),
    RouteAction(Index, Index, u16),
    Template(Index, Index, u16),
    HostTool(Index, u16),
    ParamsDrop(Index, Index),
    ToggleMcp(Index),
    Body(Index, u8),
    Limits(u32, u32),
    DfaByte(Index, Index, u8),
    DlpPatterns(Index, bool),
    DlpMinLen(u32),
    /// Any scalar field of the DLP spec (other than its DFAs), found
    /// through its serde form so that new fields are covered too.
    DlpField(Index, Index),
    DlpSwap,
    DlpAction(u8),
}

fn model_edit() -> impl Strategy<Value = ModelEdit> {
    let small = || prop_oneof![0u32..12, Just(u32::MAX), any::<u32>()];
    prop_oneof![
        (any::<Index>(), any::<bool>(), small(), small())
            .prop_map(|(i, w, s, l)| ModelEdit::RuleSpan(i, w, s, l)),
        (any::<Index>(), prop_oneof![0u16..70, any::<u16>()])
            .prop_map(|(i, s)| ModelEdit::Slot(i, s)),
        (any::<Index>(), small()).prop_map(|(i, r)| ModelEdit::Regex(i, r)),
        (any::<Index>(), any::<Index>(), 0u16..5)
            .prop_map(|(a, e, t)| ModelEdit::TableTool(a, e, t)),
        (any::<Index>(), any::<Index>(), 0u16..5)
            .prop_map(|(a, e, t)| ModelEdit::TableAction(a, e, t)),
        (any::<Index>(), any::<Index>(), small(), small())
            .prop_map(|(a, e, s, l)| ModelEdit::TableRules(a, e, s, l)),
        (any::<Index>(), prop::option::of(0u32..3)).prop_map(|(a, d)| ModelEdit::Dlp(a, d)),
        (any::<Index>(), any::<Index>(), 0u16..5)
            .prop_map(|(t, r, a)| ModelEdit::RouteAction(t, r, a)),
        (any::<Index>(), any::<Index>(), 0u16..70)
            .prop_map(|(t, a, s)| ModelEdit::Template(t, a, s)),
        (any::<Index>(), 0u16..5).prop_map(|(h, t)| ModelEdit::HostTool(h, t)),
        (any::<Index>(), any::<Index>()).prop_map(|(t, p)| ModelEdit::ParamsDrop(t, p)),
        any::<Index>().prop_map(ModelEdit::ToggleMcp),
        (any::<Index>(), 0u8..3).prop_map(|(t, b)| ModelEdit::Body(t, b)),
        (
            prop_oneof![0u32..3, Just(1000), any::<u32>()],
            prop_oneof![0u32..3, any::<u32>()]
        )
            .prop_map(|(d, p)| ModelEdit::Limits(d, p)),
        (any::<Index>(), any::<Index>(), 1u8..=255)
            .prop_map(|(d, i, x)| ModelEdit::DfaByte(d, i, x)),
        (any::<Index>(), any::<bool>()).prop_map(|(i, add)| ModelEdit::DlpPatterns(i, add)),
        prop_oneof![0u32..4, Just(u32::MAX), any::<u32>()].prop_map(ModelEdit::DlpMinLen),
        (any::<Index>(), any::<Index>()).prop_map(|(f, v)| ModelEdit::DlpField(f, v)),
        Just(ModelEdit::DlpSwap),
        (0u8..4).prop_map(ModelEdit::DlpAction),
    ]
}

fn edit_model(m: &mut Model, e: &ModelEdit) {
    let nt = m.tools.len();
    match e {
        ModelEdit::RuleSpan(i, when, s, l) => {
            let n = m.rules.len();
            let r = &mut m.rules[i.index(n)];
            let span = Span { start: *s, len: *l };
            if *when {
                r.when = span;
            } else {
                r.conds = span;
            }
        }
        ModelEdit::Slot(i, s) => {
            let n = m.preds.len();
            m.preds[i.index(n)].slot = *s;
        }
        ModelEdit::Regex(i, r) => {
            let n = m.preds.len();
            m.preds[i.index(n)].op = PredOp::NotMatches(*r);
        }
        ModelEdit::TableTool(a, ei, t) | ModelEdit::TableAction(a, ei, t) => {
            let na = m.agents.len();
            let agent = &mut m.agents[a.index(na)];
            let ne = agent.table.len();
            let entry = &mut agent.table[ei.index(ne)];
            if matches!(e, ModelEdit::TableTool(..)) {
                entry.tool = *t;
            } else {
                entry.action = *t;
            }
        }
        ModelEdit::TableRules(a, e, s, l) => {
            let na = m.agents.len();
            let agent = &mut m.agents[a.index(na)];
            let ne = agent.table.len();
            agent.table[e.index(ne)].rules = Span { start: *s, len: *l };
        }
        ModelEdit::Dlp(a, d) => {
            let na = m.agents.len();
            m.agents[a.index(na)].dlp = *d;
        }
        ModelEdit::RouteAction(t, r, a) => {
            let tool = &mut m.tools[t.index(nt)];
            if !tool.route_actions.is_empty() {
                let nr = tool.route_actions.len();
                tool.route_actions[r.index(nr)] = *a;
            }
        }
        ModelEdit::Template(t, a, s) => {
            let tool = &mut m.tools[t.index(nt)];
            let na = tool.actions.len();
            tool.actions[a.index(na)].template.push(TSeg::Param(*s));
        }
        ModelEdit::HostTool(h, t) => {
            let nh = m.exact_hosts.len();
            m.exact_hosts[h.index(nh)].1.push(*t);
        }
        ModelEdit::ParamsDrop(t, p) => {
            let tool = &mut m.tools[t.index(nt)];
            if !tool.params.is_empty() {
                let np = tool.params.len();
                tool.params.remove(p.index(np));
            }
        }
        ModelEdit::ToggleMcp(t) => {
            let tool = &mut m.tools[t.index(nt)];
            tool.mcp_path = match tool.mcp_path {
                Some(_) => None,
                None => Some("/v1/pay".into()),
            };
        }
        ModelEdit::Body(t, b) => {
            m.tools[t.index(nt)].body =
                [BodyKind::Json, BodyKind::Form, BodyKind::None][*b as usize];
        }
        ModelEdit::Limits(d, p) => {
            m.limits.max_json_depth = *d;
            m.limits.max_params = *p;
        }
        ModelEdit::DfaByte(d, i, x) => {
            let mut dfas: Vec<&mut Vec<u8>> = m.regexes.iter_mut().collect();
            dfas.extend(m.tools.iter_mut().map(|t| &mut t.routes));
            for d in &mut m.dlp {
                dfas.push(&mut d.forward);
                dfas.push(&mut d.reverse);
            }
            let n = dfas.len();
            let dfa = &mut dfas[d.index(n)];
            if !dfa.is_empty() {
                let nb = dfa.len();
                dfa[i.index(nb)] ^= x;
            }
        }
        ModelEdit::DlpPatterns(i, add) => {
            let d = &mut m.dlp[0];
            if *add {
                let extra = d.patterns[i.index(d.patterns.len())].clone();
                d.patterns.push(extra);
            } else if !d.patterns.is_empty() {
                let n = d.patterns.len();
                d.patterns.remove(i.index(n));
            }
        }
        ModelEdit::DlpMinLen(n) => m.dlp[0].min_match_len = *n,
        ModelEdit::DlpField(f, v) => edit_dlp_field(&mut m.dlp[0], *f, *v),
        ModelEdit::DlpSwap => {
            let d = &mut m.dlp[0];
            std::mem::swap(&mut d.forward, &mut d.reverse);
        }
        ModelEdit::DlpAction(a) => {
            m.dlp[0].action = [
                DlpAction::Redact,
                DlpAction::Mask,
                DlpAction::Hash,
                DlpAction::Deny,
            ][*a as usize];
        }
    }
}

/// Scalars of a JSON document, by path.
fn leaves(
    v: &serde_json::Value,
    at: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, serde_json::Value)>,
) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                leaves(x, at, out);
                at.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                leaves(x, at, out);
                at.pop();
            }
        }
        _ => out.push((at.clone(), v.clone())),
    }
}

/// Sets one scalar of the spec's serde form to a hostile value (or to
/// another scalar of the same spec); keeps the spec when the result does
/// not deserialize.
fn edit_dlp_field(spec: &mut aegis_engine::unstable::dlp::DlpSpec, field: Index, value: Index) {
    let forward = std::mem::take(&mut spec.forward);
    let reverse = std::mem::take(&mut spec.reverse);
    let mut doc = serde_json::to_value(&*spec).expect("spec to json");
    let mut all = Vec::new();
    leaves(&doc, &mut Vec::new(), &mut all);
    if !all.is_empty() {
        let (path, _) = all[field.index(all.len())].clone();
        let mut hostile: Vec<serde_json::Value> = [0u64, 1, 7, 8, 31, 32, 255, 256, 65535]
            .into_iter()
            .map(serde_json::Value::from)
            .chain([
                serde_json::Value::from(u64::from(u32::MAX)),
                serde_json::Value::from(u64::from(u32::MAX) - 1),
                serde_json::Value::from(true),
                serde_json::Value::from(false),
            ])
            .collect();
        hostile.extend(all.iter().map(|(_, v)| v.clone()));
        let new = hostile[value.index(hostile.len())].clone();
        let mut slot = &mut doc;
        for seg in &path {
            slot = match slot {
                serde_json::Value::Object(m) => m.get_mut(seg).expect("path"),
                serde_json::Value::Array(a) => &mut a[seg.parse::<usize>().expect("index")],
                _ => unreachable!("leaves are under containers"),
            };
        }
        *slot = new;
        if let Ok(edited) = serde_json::from_value(doc) {
            *spec = edited;
        }
    }
    spec.forward = forward;
    spec.reverse = reverse;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes(
        mut bytes in prop::collection::vec(any::<u8>(), 0..512),
        magic in any::<bool>(),
    ) {
        // Half of the inputs start like a bundle, so that the length, hash
        // and signature-block checks see random values.
        if magic && bytes.len() >= 10 {
            bytes[..8].copy_from_slice(MAGIC);
            bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        }
        prop_assert!(Bundle::load(&bytes, &[]).is_err());
        prop_assert!(Bundle::load(&bytes, &[trusted()]).is_err());
    }

    #[test]
    fn any_revision_round_trips(revision in any::<u64>()) {
        let b = seal_revision(stored(unsigned()), FLAG_DEFLATE, revision);
        prop_assert_eq!(Bundle::load(&b, &[]).map(|b| b.revision()), Ok(revision));
    }

    #[test]
    fn random_bytes_behind_a_valid_header(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let b = seal(&bytes);
        let _ = load_and_use(&b, &[]);
        prop_assert_eq!(Bundle::load(&b, &[trusted()]).err(), Some(LoadError::Unsigned));
    }

    #[test]
    fn mutated_payload_resealed(muts in prop::collection::vec(mutation(), 1..5)) {
        let mut p = payload(unsigned()).to_vec();
        for m in &muts {
            apply(&mut p, m);
        }
        let _ = load_and_use(&seal(&p), &[]);
    }

    /// Edits of the deflate stream itself, re-sealed as compressed.
    #[test]
    fn mutated_compressed_payload_resealed(muts in prop::collection::vec(mutation(), 1..5)) {
        let mut p = stored(unsigned()).to_vec();
        for m in &muts {
            apply(&mut p, m);
        }
        let _ = load_and_use(&seal_flags(&p, FLAG_DEFLATE), &[]);
    }

    #[test]
    fn mutated_file(muts in prop::collection::vec(mutation(), 1..4)) {
        let mut b = unsigned().to_vec();
        for m in &muts {
            apply(&mut b, m);
        }
        let _ = load_and_use(&b, &[]);
    }

    /// Any change to a signed bundle is refused when its key is trusted.
    #[test]
    fn mutated_signed_file(muts in prop::collection::vec(mutation(), 1..4)) {
        let mut b = signed().to_vec();
        for m in &muts {
            apply(&mut b, m);
        }
        let r = load_and_use(&b, &[trusted()]);
        if b != signed() {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn edited_model(edits in prop::collection::vec(model_edit(), 1..4)) {
        let mut m = model();
        for e in &edits {
            edit_model(&mut m, e);
        }
        let _ = load_and_use(&bundle_of(&m), &[]);
    }
}

/// The body stage of a request continues from the route the head stage
/// made: the token is verified once, when the request starts.
#[test]
fn a_routed_request_is_not_authenticated_again() {
    let b = Bundle::load(unsigned(), &[]).unwrap();
    let bearer = format!("Bearer {}", token("fin", "acme"));
    let headers: [(&str, &str); 2] = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let body = br#"{"amount": 10, "currency": "eur", "description": "tok"}"#;
    let mut req = Request {
        method: "POST",
        authority: "api.pay.test",
        path: "/v1/pay",
        headers: &headers[..],
        body: None,
    };
    let mut scratch = Scratch::new();
    let route = b
        .route(&req, Caller::FromRequest, NOW, &mut scratch)
        .unwrap();
    let at_headers = b.judge(&route, &req, &mut scratch);
    assert_eq!(at_headers.verdict, Verdict::NeedBody);
    assert_eq!(at_headers.agent, Some("acme/fin"));
    assert_eq!(at_headers.caller, Some(route.caller()));

    // The body arrives after the token expired.
    req.body = Some(body);
    let later = NOW + 3600;
    let again = b.decide(&req, Caller::FromRequest, later, &mut scratch);
    assert_eq!(again.verdict, Verdict::Deny, "{}", again.reason);
    let resumed = b.judge(&route, &req, &mut scratch);
    assert_eq!(resumed.verdict, Verdict::Allow, "{}", resumed.reason);
    assert_eq!(resumed.agent, Some("acme/fin"));
    assert_eq!(resumed.caller, at_headers.caller);
    // Same verdict as authenticating with a valid token.
    let fresh = b.decide(&req, Caller::FromRequest, NOW, &mut scratch);
    assert_eq!((fresh.verdict, fresh.rule), (resumed.verdict, resumed.rule));
}

/// A route is only understood by the bundle that made it.
#[test]
fn a_route_of_another_bundle_is_refused() {
    let b = Bundle::load(unsigned(), &[]).unwrap();
    let headers: [(&str, &str); 1] = [("content-type", "application/json")];
    let req = Request {
        method: "POST",
        authority: "api.pay.test",
        path: "/v1/pay",
        headers: &headers[..],
        body: Some(br#"{"amount": 10, "currency": "eur", "description": "tok"}"#),
    };
    let mut scratch = Scratch::new();
    let caller = Caller::Given {
        agent: "fin",
        tenant: Some("acme"),
    };
    let route = b.route(&req, caller, NOW, &mut scratch).unwrap();
    let mut m = model();
    m.agents.clear();
    m.source.agents.clear();
    m.source.agent_order.clear();
    let empty = Bundle::load(&bundle_of(&m), &[]).unwrap();
    let d = empty.judge(&route, &req, &mut scratch);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.reason.status(), 500, "{}", d.reason);
}

#[test]
fn the_token_comes_in_the_header_the_identity_names() {
    let mut p = policy();
    if let Some(id) = p.identity.as_mut() {
        id.token_header = "x-aegis-token".into();
    }
    let bytes = compile(&p, &BuildOptions::default(), None).unwrap();
    let b = Bundle::load(&bytes, &[]).unwrap();
    assert_eq!(
        b.credential_headers().collect::<Vec<_>>(),
        ["x-aegis-token"]
    );
    let jwt = token("fin", "acme");
    let bearer = format!("Bearer {jwt}");
    let body = br#"{"amount": 10, "currency": "eur", "description": "tok"}"#;
    let decide = |headers: &[(&str, &str)]| {
        let req = Request {
            method: "POST",
            authority: "api.pay.test",
            path: "/v1/pay",
            headers,
            body: Some(&body[..]),
        };
        let d = b.decide(&req, Caller::FromRequest, NOW, &mut Scratch::new());
        (d.verdict, d.reason.to_string())
    };
    let ct = ("content-type", "application/json");
    // Bare or with its scheme; the client's own `authorization` is left to
    // the client.
    for value in [jwt.as_str(), bearer.as_str()] {
        let (v, why) = decide(&[
            ct,
            ("x-aegis-token", value),
            ("authorization", "Bearer sk_live_x"),
        ]);
        assert_eq!(v, Verdict::Allow, "{why}");
    }
    // A token in `authorization` is not read when the identity names
    // another header.
    assert_eq!(
        decide(&[ct, ("authorization", bearer.as_str())]),
        (
            Verdict::Deny,
            "missing bearer token in `x-aegis-token` header".to_string()
        )
    );
    assert_eq!(
        decide(&[
            ct,
            ("x-aegis-token", jwt.as_str()),
            ("x-aegis-token", jwt.as_str())
        ])
        .1,
        "more than one `x-aegis-token` header or credential"
    );
    assert_eq!(
        decide(&[ct, ("x-aegis-token", "Basic abc")]).1,
        "`x-aegis-token` header is not a bearer token"
    );

    // The default header still needs its scheme.
    let b = Bundle::load(unsigned(), &[]).unwrap();
    assert_eq!(
        b.credential_headers().collect::<Vec<_>>(),
        ["authorization"]
    );
    let req = Request {
        method: "POST",
        authority: "api.pay.test",
        path: "/v1/pay",
        headers: &[ct, ("authorization", jwt.as_str())][..],
        body: Some(&body[..]),
    };
    let d = b.decide(&req, Caller::FromRequest, NOW, &mut Scratch::new());
    assert_eq!(
        d.reason.to_string(),
        "`authorization` header is not a bearer token"
    );
}
