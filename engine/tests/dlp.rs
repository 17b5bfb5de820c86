//! The DLP engine end to end: `build_dlp` → `DlpSpec` → `Scanner::scan`.
//!
//! Every detector's true positives and near misses, each action's exact
//! output, JSON / form / raw bodies, escapes, keys, custom regexes, builder
//! errors, loader robustness on corrupt specs, a proof that a clean scan
//! allocates nothing once warm (the counting global allocator comes from
//! `allocation-counter`: the workspace forbids the `unsafe` a hand-written
//! `GlobalAlloc` needs), and a property test on random JSON documents.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_engine::builder::dlp::build_dlp;
use aegis_engine::builder::regex::DLP_DFA_LIMIT;
use aegis_engine::unstable::dfa::load_dense;
use aegis_engine::unstable::dlp::{
    DlpErrorKind, DlpSpec, Offset, Outcome, Scanner, Scratch, Trigger, Validator, MAX_PATTERNS,
};
use aegis_engine::unstable::json::{self, Event, Parser};
use aegis_engine::{BodyKind, Detector, DlpAction};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use regex_automata::dfa::regex::Regex;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::OnceLock;

mod common;
use common::{all, scan, scanner, spec, DEPTH, KEY};

fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// `text` in a raw body, between other words: redacted to `[REDACTED:name]`
/// as a whole by the scanner with every detector.
fn assert_detects(name: &str, text: &str) {
    let body = format!("before {text} after");
    let s = scan(all(), BodyKind::None, &body);
    assert_eq!(
        s.out,
        format!("before [REDACTED:{name}] after"),
        "{name}: {text:?}"
    );
    assert_eq!(s.counts, counts(&[(name, 1)]), "{name}: {text:?}");
    // The same text as a JSON string value.
    let body = format!("{{\"v\":{}}}", json_str(&format!("x {text} y")));
    let s = scan(all(), BodyKind::Json, &body);
    assert_eq!(
        s.out,
        format!("{{\"v\":\"x [REDACTED:{name}] y\"}}"),
        "{name}: {text:?} in json"
    );
}

fn assert_clean(text: &str) {
    let s = scan(all(), BodyKind::None, &format!("before {text} after"));
    assert_eq!(
        s.outcome,
        Outcome::Clean,
        "{text:?} => {:?} {:?}",
        s.out,
        s.counts
    );
    let s = scan(
        all(),
        BodyKind::Json,
        &format!("{{\"v\":{}}}", json_str(text)),
    );
    assert_eq!(s.outcome, Outcome::Clean, "{text:?} in json");
}

fn json_str(s: &str) -> String {
    let mut out = Vec::new();
    json::write_escaped(&mut out, s.as_bytes());
    String::from_utf8(out).unwrap()
}

/// Decoded strings (keys and values) of a JSON document, in order, plus
/// its shape with the strings left out.
fn strings(doc: &[u8]) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut p = Parser::new(doc, DEPTH);
    let mut strs = Vec::new();
    let mut shape = Vec::new();
    while let Some(ev) = p.next().unwrap() {
        match ev {
            Event::Key(s) => {
                strs.push(s.bytes().collect());
                shape.push("key".into());
            }
            Event::Str(s) => {
                strs.push(s.bytes().collect());
                shape.push("str".into());
            }
            other => shape.push(format!("{other:?}")),
        }
    }
    (strs, shape)
}

// ---------------------------------------------------------------- detectors

#[test]
fn ssn() {
    for t in [
        "123-45-6789",
        "123 45 6789",
        "123.45.6789",
        "001-01-0001",
        "899-99-9999",
    ] {
        assert_detects("ssn", t);
    }
    for t in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-6789",
        "123-45-0000",
        "123-45 6789",
        "123.45-6789",
        "1123-45-6789",
        "123-45-67890",
        "x123-45-6789",
        "123456789",
    ] {
        assert_clean(t);
    }
}

#[test]
fn credit_card() {
    for t in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",
        "3782 822463 10005",
        "5555555555554444",
        "6011111111111117",
        "4222222222222",
        "1234567812345670",
        "4012 8888 8888 1881",
    ] {
        assert_detects("credit_card", t);
    }
    for t in [
        "4111111111111112",
        "4111 1111 1111 1112",
        "1234567812345678",
        "4111-1111 1111-1111",
        "411111111111",
        "41111111111111111111",
    ] {
        assert_clean(t);
    }
}

#[test]
fn email() {
    for t in [
        "john.doe@example.com",
        "a+tag@mail.example.co.uk",
        "x_y-z%1@sub-domain.example.org",
        "J@EXAMPLE.DE",
    ] {
        assert_detects("email", t);
    }
    for t in [
        "john@localhost",
        "@example.com",
        "john@example.c",
        "john@.com",
        "a@b",
    ] {
        assert_clean(t);
    }
    // The address ends at the TLD's word boundary.
    let s = scan(all(), BodyKind::None, "mail me: a@b.com.");
    assert_eq!(s.out, "mail me: [REDACTED:email].");
}

#[test]
fn phone() {
    for t in [
        "(555) 123-4567",
        "(555)123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "+1 555 123 4567",
        "+1-555-123-4567",
        "+15551234567",
        "+447911123456",
    ] {
        assert_detects("phone", t);
    }
    for t in [
        "555-1234",
        "+1234567",
        "12-34-56",
        "5551234567x",
        "+1234567890123456",
    ] {
        assert_clean(t);
    }
}

#[test]
fn dob() {
    for t in [
        "1990-02-28",
        "02/28/1990",
        "28.02.1990",
        "2000-02-29",
        "2099-12-31",
    ] {
        assert_detects("dob", t);
    }
    for t in [
        "1990-02-30",
        "2023-02-29",
        "1900-02-29",
        "2023-04-31",
        "1990-13-01",
        "1990-00-10",
        "13/01/1990",
        "31/12/1990",
        "32.01.1990",
        "1899-01-01",
        "2100-01-01",
        "2024-01-15T10:00:00Z",
    ] {
        assert_clean(t);
    }
}

#[test]
fn iban() {
    for t in [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "AT611904300234573201",
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
    ] {
        assert_detects("iban", t);
    }
    for t in [
        "DE89 3704 0044 0532 0130 01",
        "DE88370400440532013000",
        "GB82WEST12345698765433",
        "de89370400440532013000",
    ] {
        assert_clean(t);
    }
    // A trailing four-letter word is not part of the IBAN.
    let s = scan(all(), BodyKind::None, "DE89 3704 0044 0532 0130 00 DONE");
    assert_eq!(s.out, "[REDACTED:iban] DONE");
}

#[test]
fn aws_access_key() {
    for t in [
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "AIDAJQABLZS4A3QDU576",
    ] {
        assert_detects("aws_access_key", t);
    }
    for t in [
        "AKIAIOSFODNN7EXAMPL",
        "AXIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLEX",
        "akiaiosfodnn7example",
    ] {
        assert_clean(t);
    }
}

#[test]
fn api_key() {
    let gh36 = format!("ghp_{}", "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6");
    let sk48 = format!("sk-{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4");
    for t in [
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_4eC39HqLyjWDarjtT1zdp7dc",
        gh36.as_str(),
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "glpat-xxxxxxxxxx-xxxxxxxxxx",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        "xoxp-123456789012-1234567890123",
        sk48.as_str(),
        "sk-proj-abc_DEF-0123456789xyz_tail",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
    ] {
        assert_detects("api_key", t);
    }
    for t in [
        "sk-learn-tutorial-for-beginners",
        "ghp_short",
        "sk_live_short",
        "sk_abcd_0123456789abcdef",
        "glpat-short",
        "xoxb-123",
        "AIzaSyDaGmWKa4JsXZ",
        "risk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ] {
        assert_clean(t);
    }
}

#[test]
fn private_key() {
    let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yRoSbjK0DX0Xf==\n-----END RSA PRIVATE KEY-----";
    let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----";
    let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----";
    for t in [rsa, openssh, pkcs8] {
        assert_detects("private_key", t);
    }
    // Cut short: the header and the base64 after it.
    let s = scan(
        all(),
        BodyKind::None,
        "k=-----BEGIN PRIVATE KEY-----\nMIIBVQIBADAN\nBgkq;rest",
    );
    assert_eq!(s.out, "k=[REDACTED:private_key];rest");
    for t in [
        "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "----- BEGIN PRIVATE KEY -----",
    ] {
        assert_clean(t);
    }
}

#[test]
fn jwt() {
    let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    assert_detects("jwt", t);
    assert_detects("jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.");
    for t in [
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
        "eyJhbGciOiJIUzI1NiJ9.abc.def",
        "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    ] {
        assert_clean(t);
    }
    // Bearer header in a raw body.
    let s = scan(
        all(),
        BodyKind::None,
        &format!("Authorization: Bearer {t}\r\n"),
    );
    assert_eq!(s.out, "Authorization: Bearer [REDACTED:jwt]\r\n");
}

#[test]
fn only_selected_detectors_run() {
    let sc = scanner(&[Detector::Ssn], DlpAction::Redact);
    assert_eq!(sc.pattern_names().collect::<Vec<_>>(), ["ssn"]);
    let s = scan(&sc, BodyKind::None, "4111111111111111 a@b.com 123-45-6789");
    assert_eq!(s.out, "4111111111111111 a@b.com [REDACTED:ssn]");
    // Duplicates and order do not matter; slots follow a fixed priority.
    let a = spec(
        &[Detector::Email, Detector::Ssn, Detector::Ssn],
        &[],
        DlpAction::Redact,
    );
    let b = spec(&[Detector::Ssn, Detector::Email], &[], DlpAction::Redact);
    assert_eq!(a, b);
    let names: Vec<_> = all().pattern_names().collect();
    assert_eq!(names.len(), Detector::ALL.len());
    for d in Detector::ALL {
        assert!(names.contains(&d.name()));
    }
}

#[test]
fn several_detections_are_counted() {
    let body =
        r#"{"a":"123-45-6789 and 234-56-7890","b":["4111111111111111","x@y.org"],"123-45-6789":1}"#;
    let s = scan(all(), BodyKind::Json, body);
    assert_eq!(
        s.counts,
        counts(&[("credit_card", 1), ("email", 1), ("ssn", 3)])
    );
    assert_eq!(
        s.out,
        r#"{"a":"[REDACTED:ssn] and [REDACTED:ssn]","b":["[REDACTED:credit_card]","[REDACTED:email]"],"[REDACTED:ssn]":1}"#
    );
    // Adjacent detections and detections at the ends of a value.
    let s = scan(all(), BodyKind::Json, r#"["123-45-6789 234-56-7890"]"#);
    assert_eq!(s.out, r#"["[REDACTED:ssn] [REDACTED:ssn]"]"#);
}

// ---------------------------------------------------------------- actions

fn hash_token(key: &[u8; 32], name: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(value.as_bytes());
    let tag = mac.finalize().into_bytes();
    let hex: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("[HASH:{name}:{hex}]")
}

#[test]
fn each_action_writes_its_token() {
    let body =
        r#"{"ssn":"123-45-6789","card":"4111 1111 1111 1111","mail":"john.doe@example.com"}"#;
    let ds = [Detector::Ssn, Detector::CreditCard, Detector::Email];

    let s = scan(&scanner(&ds, DlpAction::Redact), BodyKind::Json, body);
    assert_eq!(
        s.out,
        r#"{"ssn":"[REDACTED:ssn]","card":"[REDACTED:credit_card]","mail":"[REDACTED:email]"}"#
    );
    assert_eq!(s.outcome, Outcome::Found { rewritten: true });

    let s = scan(&scanner(&ds, DlpAction::Mask), BodyKind::Json, body);
    assert_eq!(
        s.out,
        r#"{"ssn":"***-**-6789","card":"**** **** **** 1111","mail":"****.***@******e.com"}"#
    );

    let s = scan(&scanner(&ds, DlpAction::Hash), BodyKind::Json, body);
    assert_eq!(
        s.out,
        format!(
            r#"{{"ssn":"{}","card":"{}","mail":"{}"}}"#,
            hash_token(&KEY, "ssn", "123-45-6789"),
            hash_token(&KEY, "credit_card", "4111 1111 1111 1111"),
            hash_token(&KEY, "email", "john.doe@example.com"),
        )
    );
    assert_eq!(
        hash_token(&KEY, "ssn", "123-45-6789"),
        "[HASH:ssn:68fff8937a009d1d]"
    );

    let sc = scanner(&ds, DlpAction::Deny);
    assert_eq!(sc.action(), DlpAction::Deny);
    let s = scan(&sc, BodyKind::Json, body);
    assert_eq!(s.outcome, Outcome::Found { rewritten: false });
    assert_eq!(s.out, "");
    assert_eq!(
        s.counts,
        counts(&[("credit_card", 1), ("email", 1), ("ssn", 1)])
    );
}

#[test]
fn hash_is_deterministic_and_keyed() {
    let body = "a 123-45-6789 b 123-45-6789 c 234-56-7890";
    let sc = scanner(&[Detector::Ssn], DlpAction::Hash);
    let one = scan(&sc, BodyKind::None, body).out;
    let two = scan(&sc, BodyKind::None, body).out;
    assert_eq!(one, two);
    let same = hash_token(&KEY, "ssn", "123-45-6789");
    let other = hash_token(&KEY, "ssn", "234-56-7890");
    assert_eq!(one, format!("a {same} b {same} c {other}"));
    assert_ne!(same, other);
    // Another key, other tokens.
    let other_key = build_dlp(&[Detector::Ssn], &[], DlpAction::Hash, [8; 32]).unwrap();
    let three = scan(&Scanner::load(&other_key).unwrap(), BodyKind::None, body).out;
    assert_ne!(one, three);
    assert!(three.starts_with(&format!(
        "a {} b",
        hash_token(&[8; 32], "ssn", "123-45-6789")
    )));
}

#[test]
fn mask_keeps_the_last_four_alphanumerics() {
    let sc = scanner(
        &[Detector::Ssn, Detector::Iban, Detector::Phone],
        DlpAction::Mask,
    );
    let s = scan(
        &sc,
        BodyKind::None,
        "123.45.6789 | DE89 3704 0044 0532 0130 00 | (555) 123-4567",
    );
    assert_eq!(
        s.out,
        "***.**.6789 | **** **** **** **** **30 00 | (***) ***-4567"
    );
    let custom = Scanner::load(&spec(&[], &[("name", "Jürgen|ab")], DlpAction::Mask)).unwrap();
    assert_eq!(scan(&custom, BodyKind::None, "Jürgen ab").out, "**rgen ab");
}

// ---------------------------------------------------------------- bodies

#[test]
fn json_output_stays_valid_json() {
    let body = r#" { "note" : "my ssn is 123-45-6789, \"quoted\"\n\t\/ é \u00e9" , "n" : [1, 2.5e3, true, null, {}] } "#;
    for action in [DlpAction::Redact, DlpAction::Mask, DlpAction::Hash] {
        let s = scan(&scanner(&[Detector::Ssn], action), BodyKind::Json, body);
        json::validate(s.out.as_bytes(), DEPTH).unwrap();
        let (in_strs, in_shape) = strings(body.as_bytes());
        let (out_strs, out_shape) = strings(s.out.as_bytes());
        assert_eq!(in_shape, out_shape);
        let token = match action {
            DlpAction::Redact => "[REDACTED:ssn]".to_string(),
            DlpAction::Mask => "***-**-6789".to_string(),
            _ => hash_token(&KEY, "ssn", "123-45-6789"),
        };
        let want = format!("my ssn is {token}, \"quoted\"\n\t/ é é");
        assert_eq!(out_strs[1], want.as_bytes());
        assert_eq!(out_strs[0], in_strs[0]);
    }
    // Untouched parts of the document are copied byte for byte.
    let s = scan(all(), BodyKind::Json, body);
    assert!(s.out.starts_with(r#" { "note" : ""#));
    assert!(s
        .out
        .ends_with(r#"" , "n" : [1, 2.5e3, true, null, {}] } "#));
}

#[test]
fn escaped_pii_in_json_is_found() {
    let s = scan(
        all(),
        BodyKind::Json,
        r#"{"a":"\u0031\u0032\u0033-45-6789"}"#,
    );
    assert_eq!(s.out, r#"{"a":"[REDACTED:ssn]"}"#);
    let s = scan(
        all(),
        BodyKind::Json,
        r#"{"a":"mail: john\u002edoe\u0040example.com"}"#,
    );
    assert_eq!(s.out, r#"{"a":"mail: [REDACTED:email]"}"#);
    // An escape right before the value still leaves a word boundary.
    let s = scan(all(), BodyKind::Json, r#"["line\n123-45-6789\tend"]"#);
    assert_eq!(s.out, r#"["line\n[REDACTED:ssn]\tend"]"#);
    // A PEM key lives in one string with escaped newlines.
    let pem = r#"["-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"]"#;
    let s = scan(all(), BodyKind::Json, pem);
    assert_eq!(s.out, r#"["[REDACTED:private_key]\n"]"#);
}

#[test]
fn pii_in_keys_is_found() {
    let s = scan(
        all(),
        BodyKind::Json,
        r#"{"123-45-6789":{"john@example.com":"x"}}"#,
    );
    assert_eq!(s.out, r#"{"[REDACTED:ssn]":{"[REDACTED:email]":"x"}}"#);
    assert_eq!(s.counts, counts(&[("email", 1), ("ssn", 1)]));
}

#[test]
fn detections_after_long_trigger_free_text_are_found() {
    // A string's trigger bytes are first looked for in the body's 32-byte
    // chunk masks, and the search starts at the first one: strings that
    // start anywhere in a chunk, values far into a string, in neighbouring
    // strings that share a chunk, plain and escaped.
    let filler = "the quick brown fox jumps over the lazy dog, twice over ";
    for lead in 0..40 {
        let pad = "x".repeat(lead);
        for before in [0, 1, 7, 31, 32, 33, 63, 64, 65] {
            let text = &filler.repeat(2)[..before];
            for escaped in [false, true] {
                let esc = if escaped { "\\n" } else { "" };
                let body = format!(
                    r#"{{"{pad}":"{text}{esc} 123-45-6789 z","k":"no triggers here","m":"{text} jo@example.org"}}"#
                );
                let s = scan(all(), BodyKind::Json, &body);
                assert_eq!(
                    s.out,
                    format!(
                        r#"{{"{pad}":"{text}{esc} [REDACTED:ssn] z","k":"no triggers here","m":"{text} [REDACTED:email]"}}"#
                    ),
                    "lead {lead}, {before} bytes before, escaped {escaped}"
                );
                assert_eq!(s.counts, counts(&[("email", 1), ("ssn", 1)]));
            }
        }
    }
    let s = scan(all(), BodyKind::Json, r#"{"k":"no triggers here"}"#);
    assert_eq!(s.outcome, Outcome::Clean);
}
#[test]
fn detections_that_end_the_text_are_found() {
    // A trigger byte is passed when fewer bytes follow it than any match
    // holding it first needs (eight from a digit: `+` and eight digits).
    // The shortest matches, ending a body, a JSON string, a form value.
    for (name, text) in [
        ("phone", "+12345678"),
        ("phone", "+1 555 123 4567"),
        ("ssn", "123-45-6789"),
        ("credit_card", "4111111111111111"),
        ("email", "a@b.co"),
        ("iban", "DE89370400440532013000"),
    ] {
        for lead in ["", "x ", "x\t"] {
            let raw = format!("{lead}{text}");
            let json = format!("{{\"v\":{}}}", json_str(&raw));
            let form = format!(
                "v={}",
                raw.replace('+', "%2B")
                    .replace(' ', "+")
                    .replace('\t', "%09")
            );
            for (kind, body) in [
                (BodyKind::None, &raw),
                (BodyKind::Json, &json),
                (BodyKind::Form, &form),
            ] {
                let s = scan(all(), kind, body);
                assert_eq!(s.counts, counts(&[(name, 1)]), "{kind:?} {body:?}");
            }
        }
    }
    // One byte short of the shortest: nothing to find, and no error.
    assert_clean("+1234567");
}

#[test]
fn literals_are_not_scanned() {
    let s = scan(all(), BodyKind::Json, r#"{"a":true,"b":false,"c":null}"#);
    assert_eq!(s.outcome, Outcome::Clean);
}

#[test]
fn malformed_json_is_an_error_that_does_not_echo_the_body() {
    let sc = all();
    let mut scratch = Scratch::new();
    for bad in [
        r#"{"ssn":"123-45-6789""#,
        r#"{"ssn":"123-45-6789",}"#,
        r#"{"ssn":"\x"}"#,
        r#"["123-45-6789"] tail"#,
        "",
    ] {
        let e = sc
            .scan(BodyKind::Json, bad.as_bytes(), DEPTH, &mut scratch)
            .unwrap_err();
        assert!(matches!(e.kind, DlpErrorKind::Json(_)), "{bad:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("malformed json body: "), "{msg}");
        assert!(!msg.contains("123") && !msg.contains('`'), "{msg}");
    }
    let deep = format!("{}\"123-45-6789\"{}", "[".repeat(10), "]".repeat(10));
    assert!(sc
        .scan(BodyKind::Json, deep.as_bytes(), 5, &mut scratch)
        .is_err());
    assert!(sc
        .scan(BodyKind::Json, deep.as_bytes(), 10, &mut scratch)
        .is_ok());
}

#[test]
fn form_bodies() {
    let sc = all();
    let s = scan(sc, BodyKind::Form, "ssn=123-45-6789&x=1");
    assert_eq!(s.out, "ssn=%5BREDACTED%3Assn%5D&x=1");
    let s = scan(sc, BodyKind::Form, "ssn=%31%32%33-45-6789&x=1");
    assert_eq!(s.out, "ssn=%5BREDACTED%3Assn%5D&x=1");
    let s = scan(
        sc,
        BodyKind::Form,
        "note=my+ssn+is+123-45-6789&123-45-6789=key",
    );
    assert_eq!(
        s.out,
        "note=my+ssn+is+%5BREDACTED%3Assn%5D&%5BREDACTED%3Assn%5D=key"
    );
    assert_eq!(s.counts, counts(&[("ssn", 2)]));
    let s = scan(sc, BodyKind::Form, "mail=john.doe%40example.com&&flag&=");
    assert_eq!(s.out, "mail=%5BREDACTED%3Aemail%5D&&flag&=");
    let mask = scanner(&[Detector::Ssn], DlpAction::Mask);
    assert_eq!(
        scan(&mask, BodyKind::Form, "a=123+45+6789").out,
        "a=***+**+6789"
    );
    assert_eq!(
        scan(sc, BodyKind::Form, "amount=1200&currency=usd").outcome,
        Outcome::Clean
    );
    // The rewritten body decodes to the rewritten values.
    let s = scan(sc, BodyKind::Form, "q=%E2%82%AC+123-45-6789+%26+more");
    assert_eq!(s.out, "q=%E2%82%AC+%5BREDACTED%3Assn%5D+%26+more");

    let mut scratch = Scratch::new();
    for (bad, at) in [
        ("a=%G1", 2),
        ("a=1&b=%4", 6),
        ("%zz=1", 0),
        ("a=123-45-6789%", 13),
    ] {
        let e = sc
            .scan(BodyKind::Form, bad.as_bytes(), DEPTH, &mut scratch)
            .unwrap_err();
        assert_eq!(
            (e.kind, e.offset),
            (DlpErrorKind::PercentEncoding, at),
            "{bad}"
        );
        assert_eq!(
            e.to_string(),
            format!("malformed form body: invalid percent-encoding at byte {at}")
        );
    }
}

#[test]
fn raw_bodies() {
    let s = scan(
        all(),
        BodyKind::None,
        "ssn: 123-45-6789\ncard: 4111111111111111\n",
    );
    assert_eq!(s.out, "ssn: [REDACTED:ssn]\ncard: [REDACTED:credit_card]\n");
    assert_eq!(scan(all(), BodyKind::None, "").outcome, Outcome::Clean);
    assert_eq!(
        scan(all(), BodyKind::None, "nothing to see").outcome,
        Outcome::Clean
    );
    // Raw bodies need not be UTF-8.
    let mut scratch = Scratch::new();
    let body = b"\xff\xfe 123-45-6789 \x80";
    let o = all()
        .scan(BodyKind::None, body, DEPTH, &mut scratch)
        .unwrap();
    assert_eq!(o, Outcome::Found { rewritten: true });
    assert_eq!(scratch.out, b"\xff\xfe [REDACTED:ssn] \x80");
}

#[test]
fn scratch_is_reset_between_scans() {
    let sc = all();
    let mut scratch = Scratch::new();
    sc.scan(BodyKind::Json, br#"["123-45-6789"]"#, DEPTH, &mut scratch)
        .unwrap();
    assert!(!scratch.out.is_empty());
    let o = sc
        .scan(BodyKind::Json, br#"["clean"]"#, DEPTH, &mut scratch)
        .unwrap();
    assert_eq!(o, Outcome::Clean);
    assert!(scratch.out.is_empty());
    assert!(scratch.counts.iter().all(|c| *c == 0));
}

// ---------------------------------------------------------------- custom

#[test]
fn custom_regexes() {
    let sp = spec(
        &[Detector::Ssn],
        &[
            ("patient_id", r"\bPT-\d{8}\b"),
            ("acct", r"^ACME-[0-9]+$"),
            ("name_de", "Müller"),
        ],
        DlpAction::Redact,
    );
    let sc = Scanner::load(&sp).unwrap();
    assert_eq!(
        sc.pattern_names().collect::<Vec<_>>(),
        ["ssn", "patient_id", "acct", "name_de"]
    );
    let body = r#"{"p":"PT-12345678 and xPT-12345678","a":"ACME-42","b":"id ACME-42","n":"Herr Müller","s":"123-45-6789"}"#;
    let s = scan(&sc, BodyKind::Json, body);
    assert_eq!(
        s.out,
        r#"{"p":"[REDACTED:patient_id] and xPT-12345678","a":"[REDACTED:acct]","b":"id ACME-42","n":"Herr [REDACTED:name_de]","s":"[REDACTED:ssn]"}"#
    );
    assert_eq!(
        s.counts,
        counts(&[("acct", 1), ("name_de", 1), ("patient_id", 1), ("ssn", 1)])
    );
    // Hashing a custom detection.
    let sp = spec(&[], &[("patient_id", r"PT-[0-9]{8}")], DlpAction::Hash);
    let s = scan(
        &Scanner::load(&sp).unwrap(),
        BodyKind::Form,
        "id=PT-12345678",
    );
    let token = hash_token(&KEY, "patient_id", "PT-12345678");
    assert_eq!(
        s.out,
        format!(
            "id={}",
            token
                .replace('[', "%5B")
                .replace(':', "%3A")
                .replace(']', "%5D")
        )
    );
}

#[test]
fn builder_errors() {
    let err = |custom: &[(&str, &str)]| {
        let custom: Vec<(String, String)> = custom
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        build_dlp(&[Detector::Ssn], &custom, DlpAction::Redact, KEY)
            .unwrap_err()
            .to_string()
    };
    let e = err(&[("patient_id", "PT-[0-9")]);
    assert!(
        e.starts_with("invalid regex `PT-[0-9` for custom detector `patient_id`"),
        "{e}"
    );
    let e = err(&[("wide", "[01]*1[01]{20}")]);
    assert!(
        e.contains("regex `[01]*1[01]{20}`") && e.contains("larger than the limit"),
        "{e}"
    );
    assert!(e.contains("`wide`"), "{e}");
    let e = err(&[("empty", "a*")]);
    assert_eq!(
        e,
        "regex `a*` for custom detector `empty` can match the empty string"
    );
    let e = err(&[("ssn", "x")]);
    assert_eq!(e, "dlp detector name `ssn` is used twice");
    let e = err(&[("a", "x"), ("a", "y")]);
    assert_eq!(e, "dlp detector name `a` is used twice");
    let e = err(&[("Bad Name", "x")]);
    assert!(
        e.starts_with("invalid custom detector name `Bad Name`"),
        "{e}"
    );
    let many: Vec<(String, String)> = (0..MAX_PATTERNS)
        .map(|i| (format!("c{i}"), format!("x{i}y")))
        .collect();
    let e = build_dlp(&[Detector::Ssn], &many, DlpAction::Redact, KEY).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dlp has 33 detectors, more than the limit of 32"
    );
    assert!(build_dlp(&[], &many[..MAX_PATTERNS], DlpAction::Redact, KEY).is_ok());
    for e in [
        err(&[("patient_id", "PT-[0-9")]),
        err(&[("wide", "[01]*1[01]{20}")]),
    ] {
        assert!(e.starts_with(|c: char| c.is_ascii_lowercase()), "{e}");
        assert!(!e.ends_with('.') && !e.contains('\n'), "{e}");
    }
}

#[test]
fn dfa_sizes_stay_small() {
    let sp = spec(&Detector::ALL, &[], DlpAction::Redact);
    let (fwd, rev) = Scanner::load(&sp).unwrap().dfa_sizes();
    println!(
        "all detectors: forward dfa {fwd} bytes, reverse dfa {rev} bytes, serialized {} + {}",
        sp.forward.len(),
        sp.reverse.len()
    );
    assert!(fwd + rev < DLP_DFA_LIMIT / 16, "{fwd} + {rev}");
}

#[test]
fn adversarial_bodies_scan_in_linear_time() {
    // Heads that fail (or succeed) over and over must not rescan the rest
    // of the body each time: 256 KB of each takes milliseconds when linear
    // and minutes when quadratic.
    let n = 256 * 1024;
    let bodies: Vec<(&str, Vec<u8>)> = [
        "eyJa-",
        "eyJa.eyJb-",
        "-----BEGIN A PRIVATE KEY-----;",
        "-----BEGIN A PRIVATE KEY-----\n",
        "AIza-",
        "sk-proj-a-",
        "xoxb-1-",
        "a@",
        "a.",
        "1",
        "4111 ",
        "DE89 ",
        "123-45-",
        "+1 ",
        "\u{200B}",
        "1\u{200B}",
        "１",
        "\u{AD}1-",
        "D\u{FEFF}E",
    ]
    .iter()
    .map(|unit| (*unit, unit.repeat(n / unit.len()).into_bytes()))
    .collect();
    let mut scratch = Scratch::new();
    for (unit, body) in &bodies {
        let t = std::time::Instant::now();
        for kind in [BodyKind::None, BodyKind::Form] {
            all().scan(kind, body, DEPTH, &mut scratch).unwrap();
        }
        let mut doc = Vec::new();
        json::write_escaped(&mut doc, body);
        all()
            .scan(BodyKind::Json, &doc, DEPTH, &mut scratch)
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(secs < 20.0, "{unit:?} repeated took {secs:.1} s");
    }
}

// ---------------------------------------------------------------- loading

#[test]
fn corrupt_specs_never_panic() {
    let good = spec(&[Detector::Ssn, Detector::Email], &[], DlpAction::Redact);
    let body = br#"{"a":"123-45-6789 john@example.com","b":"x"}"#;
    let mut scratch = Scratch::new();
    let mut try_spec = |sp: &DlpSpec| {
        if let Ok(sc) = Scanner::load(sp) {
            for kind in [BodyKind::Json, BodyKind::Form, BodyKind::None] {
                let _ = sc.scan(kind, body, DEPTH, &mut scratch);
            }
        }
    };
    let mut sp = good.clone();
    std::mem::swap(&mut sp.forward, &mut sp.reverse);
    assert!(Scanner::load(&sp).is_err());
    let mut sp = good.clone();
    sp.patterns.pop();
    assert!(Scanner::load(&sp)
        .unwrap_err()
        .to_string()
        .contains("patterns"));
    // Names are written into rewritten bodies as they are.
    for name in ["", "a\"b", "a\\b", "new\nline", "é", &"x".repeat(65)] {
        let mut sp = good.clone();
        sp.patterns[0].name = name.to_string();
        let err = Scanner::load(&sp).unwrap_err().to_string();
        assert_eq!(
            err, "dlp spec names detector 0 with an invalid name",
            "{name:?}"
        );
    }
    let mut sp = good.clone();
    sp.forward.truncate(sp.forward.len() / 2);
    assert!(Scanner::load(&sp).is_err());
    let mut sp = good.clone();
    sp.min_match_len = u32::MAX;
    try_spec(&sp);
    let mut sp = good.clone();
    let trigger = |byte, lead, before, starts, rest, offsets| Trigger {
        byte,
        lead,
        before: [before; 32],
        starts,
        rest,
        after: [!before; 32],
        offsets,
    };
    let offset = |len: u8, fill: u8, rest| Offset {
        len,
        bytes: vec![[fill; 32]; usize::from(len)],
        rest,
        after: [!fill; 32],
    };
    sp.triggers = vec![
        trigger(0, 255, 0xff, true, 0, vec![offset(255, 0xff, 0)]),
        trigger(
            255,
            255,
            0,
            false,
            255,
            vec![offset(3, 0, 255), offset(0, 0xff, 1)],
        ),
        trigger(b'1', 0, 0, false, 1, vec![offset(1, 0xff, 0)]),
        trigger(b'1', 0, 0, false, 1, vec![offset(2, 0xff, 0)]),
        trigger(b'3', 9, 0xff, false, 200, vec![]),
        trigger(
            b'5',
            9,
            0xff,
            false,
            200,
            vec![offset(9, 0x0f, 2), offset(8, 0xf0, 255), offset(0, 0xff, 0)],
        ),
    ];
    try_spec(&sp);
    // Offsets out of order, or with a bitmap too few, are refused.
    let mut bad = sp.clone();
    bad.triggers[5].offsets.reverse();
    assert!(Scanner::load(&bad).is_err());
    let mut bad = sp.clone();
    bad.triggers[5].offsets[0].bytes.pop();
    assert!(Scanner::load(&bad).is_err());
    sp.triggers.clear();
    try_spec(&sp);
    for i in (0..good.forward.len()).step_by(97) {
        let mut sp = good.clone();
        sp.forward[i] ^= 0x5a;
        try_spec(&sp);
        let mut sp = good.clone();
        if let Some(b) = sp.reverse.get_mut(i) {
            *b = b.wrapping_add(1);
        }
        try_spec(&sp);
    }
}

#[test]
fn spec_round_trips_through_postcard() {
    let sp = spec(&Detector::ALL, &[("p", "PT-[0-9]+")], DlpAction::Hash);
    let bytes = postcard::to_allocvec(&sp).unwrap();
    let back: DlpSpec = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, sp);
    Scanner::load(&back).unwrap();
}

// ---------------------------------------------------------------- no allocation

/// About 16 KB of clean JSON with plain and escaped strings, keys, numbers.
fn clean_doc(target: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < target {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"sku":"AB-{i:05}","name":"widget number {i}","note":"line one\nline \"two\" \u00e9 caf\u00e9","tags":["home","garden"],"price":{}.99,"in_stock":true}}"#,
            i % 97
        ));
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

#[test]
fn a_clean_scan_allocates_nothing() {
    let doc = clean_doc(16 * 1024);
    assert!(doc.len() >= 16 * 1024);
    let form = b"amount=1200&currency=usd&note=thanks+a+lot%21&desc=caf%C3%A9".to_vec();
    for sc in [
        all(),
        &scanner(&[Detector::Ssn, Detector::Email], DlpAction::Mask),
    ] {
        let mut scratch = Scratch::new();
        // Warm up: the decode buffer grows to the longest escaped string.
        for (kind, body) in [
            (BodyKind::Json, &doc),
            (BodyKind::Form, &form),
            (BodyKind::None, &doc),
        ] {
            assert_eq!(
                sc.scan(kind, body, DEPTH, &mut scratch).unwrap(),
                Outcome::Clean
            );
        }
        let mut outcomes = Vec::with_capacity(30);
        let info = allocation_counter::measure(|| {
            for _ in 0..10 {
                for (kind, body) in [
                    (BodyKind::Json, &doc),
                    (BodyKind::Form, &form),
                    (BodyKind::None, &doc),
                ] {
                    let o = sc.scan(kind, black_box(body), DEPTH, &mut scratch);
                    outcomes.push(black_box(o).map_err(|_| ()));
                }
            }
        });
        assert_eq!(
            info.count_total, 0,
            "clean scans allocated {} times ({} bytes)",
            info.count_total, info.bytes_total
        );
        assert!(outcomes.iter().all(|o| *o == Ok(Outcome::Clean)));
    }
}

#[test]
fn throughput_report() {
    // Not asserted: a rough number for the report (run with --release).
    let doc = clean_doc(64 * 1024);
    let sc = all();
    let mut scratch = Scratch::new();
    let rounds = if cfg!(debug_assertions) { 3 } else { 300 };
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        sc.scan(BodyKind::Json, black_box(&doc), DEPTH, &mut scratch)
            .unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "dlp: {} KB clean json, all detectors: {:.0} MB/s",
        doc.len() / 1024,
        (doc.len() * rounds) as f64 / secs / 1e6
    );
}

// ---------------------------------------------------------------- property

/// The SSN detector's semantics, written out by hand: leftmost windows of
/// `DDD s DD s DDDD` (one separator kind) between ASCII word boundaries;
/// invalid numbers are skipped as a whole.
fn reference_redact(s: &[u8]) -> (Vec<u8>, u32) {
    let word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let is_ssn_at = |i: usize| -> Option<bool> {
        let w = s.get(i..i + 11)?;
        let sep = w[3];
        let shape = matches!(sep, b'-' | b' ' | b'.')
            && w[6] == sep
            && w.iter()
                .enumerate()
                .all(|(k, b)| k == 3 || k == 6 || b.is_ascii_digit());
        if !shape || word(i.checked_sub(1).and_then(|j| s.get(j))) || word(s.get(i + 11)) {
            return None;
        }
        let n = |a: usize, b: usize| {
            std::str::from_utf8(&w[a..b])
                .unwrap()
                .parse::<u32>()
                .unwrap()
        };
        let (area, group, serial) = (n(0, 3), n(4, 6), n(7, 11));
        Some(area != 0 && area != 666 && area < 900 && group != 0 && serial != 0)
    };
    let mut out = Vec::new();
    let mut n = 0;
    let mut i = 0;
    while i < s.len() {
        match is_ssn_at(i) {
            Some(valid) => {
                if valid {
                    out.extend_from_slice(b"[REDACTED:ssn]");
                    n += 1;
                } else {
                    out.extend_from_slice(&s[i..i + 11]);
                }
                i += 11;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    (out, n)
}

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z]{1,8}",
        "[0-9]{1,5}",
        Just(" ".to_string()),
        Just("-".to_string()),
        Just(".".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just("é€😀".to_string()),
        (
            1u32..900,
            1u32..100,
            1u32..10000,
            prop::sample::select(vec!['-', ' ', '.'])
        )
            .prop_map(|(a, g, s, sep)| format!(" {a:03}{sep}{g:02}{sep}{s:04} ")),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

fn value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::Num),
        text().prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((text(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

/// Serializes with `write_escaped`, and spells every digit of the strings
/// at positions in `escape_digits` as `\u003X` to exercise decoding.
fn to_json(v: &J, escape_digits: bool, out: &mut Vec<u8>) {
    let string = |s: &str, out: &mut Vec<u8>| {
        let mut lit = Vec::new();
        json::write_escaped(&mut lit, s.as_bytes());
        if escape_digits {
            for b in lit {
                if b.is_ascii_digit() {
                    out.extend_from_slice(format!("\\u{:04x}", b).as_bytes());
                } else {
                    out.push(b);
                }
            }
        } else {
            out.extend_from_slice(&lit);
        }
    };
    match v {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        J::Num(n) => out.extend_from_slice(n.to_string().as_bytes()),
        J::Str(s) => string(s, out),
        J::Arr(items) => {
            out.push(b'[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                to_json(it, escape_digits, out);
            }
            out.push(b']');
        }
        J::Obj(members) => {
            out.extend_from_slice(b"{ ");
            for (i, (k, it)) in members.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                string(k, out);
                out.push(b':');
                to_json(it, escape_digits, out);
            }
            out.push(b'}');
        }
    }
}

/// All built-in detectors with every validator switched off, so that the
/// scanner reports the DFA's matches as they are; and the same DFAs as a
/// plain `regex_automata` regex, which searches without skipping.
fn unvalidated() -> &'static (
    Scanner,
    Regex<aegis_engine::unstable::dfa::Dfa>,
    Vec<String>,
) {
    static UNVALIDATED: OnceLock<(
        Scanner,
        Regex<aegis_engine::unstable::dfa::Dfa>,
        Vec<String>,
    )> = OnceLock::new();
    UNVALIDATED.get_or_init(|| {
        let mut sp = spec(
            &Detector::ALL,
            &[("pt", r"\bPT-[0-9]{4}")],
            DlpAction::Redact,
        );
        for p in &mut sp.patterns {
            p.validator = Validator::None;
        }
        // Heads are shorter than detections.
        sp.min_match_len = 0;
        let names = sp.patterns.iter().map(|p| p.name.clone()).collect();
        let fwd = load_dense(&sp.forward).unwrap();
        let rev = load_dense(&sp.reverse).unwrap();
        let re = Regex::builder().build_from_dfas(fwd, rev);
        (Scanner::load(&sp).unwrap(), re, names)
    })
}

/// Text dense in trigger bytes and in prefixes of the detectors' heads.
fn tricky_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "sk-",
            "sk_live_",
            "ghp_",
            "github_pat_",
            "glpat-",
            "xoxb-",
            "AIza",
            "eyJ",
            "eyJa.",
            "-----BEGIN ",
            "-----",
            "AKIA",
            "A3T",
            "DE89",
            "GB82 WEST ",
            "@ex",
            "a@b.co",
            "+1 ",
            "(555) ",
            "555-",
            "123-45-",
            "4111 ",
            "19",
            "20",
            "02/",
            ".12.",
            "PT-",
            // Parts of the bytes before a trigger (see `Offset`).
            "gl",
            "xox",
            "xo",
            "s",
            "k",
            "doc-",
            "_",
            "-",
            "@",
            "A",
            "J",
            " ",
            ".",
            "/",
            "é",
            "\n",
            // Read as digits and `-`, or not at all (see `dlp::fold`).
            "１",
            "２３",
            "－",
            "\u{200B}",
            "\u{200C}\u{200D}",
            "\u{2060}",
            "\u{FEFF}",
            "\u{AD}",
            "\u{200E}\u{202E}",
            "\u{34F}",
            "\u{FE0F}",
            "\u{E0041}",
            "\u{1D173}",
            "／",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        // Cut sequences.
        prop::sample::select(vec![
            &b"\xEF\xBC"[..],
            b"\xE2\x80",
            b"\xC2",
            b"\xBC\x91",
            b"\xF3\xA0\x81",
            b"\xCD",
        ])
        .prop_map(<[u8]>::to_vec),
        "[0-9]{1,6}".prop_map(String::into_bytes),
        "[a-zA-Z]{1,6}".prop_map(String::into_bytes),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Whether the scanner leaves `c` out: Unicode's default-ignorable code
/// points (DerivedCoreProperties.txt).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// `hay` as the scanner's DFAs read it (invisible characters left out,
/// full-width digits and hyphen as ASCII, every other byte as itself),
/// and the span in `hay` of each byte read.
fn read_as_dfas_do(hay: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut read = Vec::new();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < hay.len() {
        let c = (2..=4).find_map(|len| {
            let s = std::str::from_utf8(hay.get(at..at + len)?).ok()?;
            Some((s.chars().next()?, len))
        });
        let (len, b) = match c {
            Some((c, len)) if invisible(c) => (len, None),
            Some((c @ '０'..='９', len)) => (len, Some(b'0' + (c as u32 - 0xFF10) as u8)),
            Some(('－', len)) => (len, Some(b'-')),
            _ => (1, Some(hay[at])),
        };
        if let Some(b) = b {
            read.push(b);
            spans.push((at, at + len));
        }
        at += len;
    }
    (read, spans)
}

fn ssn_scanner() -> &'static Scanner {
    static SSN: OnceLock<Scanner> = OnceLock::new();
    SSN.get_or_init(|| scanner(&[Detector::Ssn], DlpAction::Redact))
}

/// What the scanner (validators off) and a plain DFA search over the
/// text as the DFAs read it make of `hay`: detections and rewritten text.
fn skipping_and_plain(hay: &[u8]) -> ((u32, String), (u32, String)) {
    let (sc, re, names) = unvalidated();
    let (read, spans) = read_as_dfas_do(hay);
    let mut want = Vec::new();
    let mut last = 0;
    let mut n = 0u32;
    for m in re.find_iter(&read) {
        let (start, end) = (spans[m.start()].0, spans[m.end() - 1].1);
        want.extend_from_slice(&hay[last..start]);
        want.extend_from_slice(format!("[REDACTED:{}]", names[m.pattern().as_usize()]).as_bytes());
        last = end;
        n += 1;
    }
    want.extend_from_slice(&hay[last..]);
    let mut scratch = Scratch::new();
    let outcome = sc.scan(BodyKind::None, hay, DEPTH, &mut scratch).unwrap();
    let got = match outcome {
        Outcome::Found { rewritten: true } => scratch.out.clone(),
        Outcome::Clean => hay.to_vec(),
        other => panic!("{other:?}"),
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    ((scratch.counts.iter().sum(), text(&got)), (n, text(&want)))
}

#[test]
fn invisible_characters_before_a_trigger_byte_hide_nothing() {
    // Before a trigger byte the scanner judges bytes one by one only while
    // each is a character of its own; an invisible one (or any other
    // non-ASCII) there must not make it pass the trigger. Each head, with
    // an invisible character at every place before its trigger byte.
    for head in [
        "(555) 555-1920",
        "+1 415 555 0132",
        "DE89 3704 0044 0532 0130 00",
        "xoxb-12345",
        "glpat-abc",
        "sk-abc",
        "gho_abc",
        "eyJhb.",
        "PT-1234",
    ] {
        for at in 0..head.len() {
            for inv in ["\u{200B}", "\u{AD}", "\u{200F}", "\u{E0020}", "é"] {
                let hay = format!("x {}{inv}{} y", &head[..at], &head[at..]);
                let (got, want) = skipping_and_plain(hay.as_bytes());
                assert_eq!(got, want, "{hay:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn redacted_json_is_valid_and_keeps_non_pii(v in value(), escape_digits in any::<bool>()) {
        let mut doc = Vec::new();
        to_json(&v, escape_digits, &mut doc);
        let mut scratch = Scratch::new();
        let outcome = ssn_scanner().scan(BodyKind::Json, &doc, DEPTH, &mut scratch).unwrap();
        let (in_strs, in_shape) = strings(&doc);
        let expected: Vec<(Vec<u8>, u32)> = in_strs.iter().map(|s| reference_redact(s)).collect();
        let total: u32 = expected.iter().map(|(_, n)| n).sum();
        prop_assert_eq!(scratch.counts[0], total);
        if total == 0 {
            prop_assert_eq!(outcome, Outcome::Clean);
            prop_assert!(scratch.out.is_empty());
        } else {
            prop_assert_eq!(outcome, Outcome::Found { rewritten: true });
            prop_assert!(json::validate(&scratch.out, DEPTH).is_ok());
            let (out_strs, out_shape) = strings(&scratch.out);
            prop_assert_eq!(in_shape, out_shape);
            for ((out, inp), (want, _)) in out_strs.iter().zip(&in_strs).zip(&expected) {
                // Strings without PII are unchanged; the others hold no
                // valid SSN any more.
                prop_assert_eq!(out, want, "input {:?}", String::from_utf8_lossy(inp));
                prop_assert_eq!(reference_redact(out).1, 0);
            }
        }
    }

    #[test]
    fn skipping_finds_what_the_plain_dfa_search_finds(hay in tricky_text()) {
        let (got, want) = skipping_and_plain(&hay);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn strings_in_a_body_read_as_they_do_alone(hays in prop::collection::vec(tricky_text(), 1..6)) {
        // The scanner looks for trigger bytes in the whole body, past the
        // end of the string it scans; what it finds must not depend on
        // what surrounds the string.
        let (sc, _, _) = unvalidated();
        let alone = |text: &str| {
            let mut scratch = Scratch::new();
            let outcome = sc.scan(BodyKind::None, text.as_bytes(), DEPTH, &mut scratch).unwrap();
            let n: u32 = scratch.counts.iter().sum();
            let out = match outcome {
                Outcome::Clean => text.to_string(),
                _ => String::from_utf8(scratch.out.clone()).unwrap(),
            };
            (n, out)
        };
        let strs: Vec<String> = hays.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
        let want: Vec<(u32, String)> = strs.iter().map(|t| alone(t)).collect();
        let want_n: u32 = want.iter().map(|(n, _)| n).sum();
        let doc = serde_json::to_vec(&strs).unwrap();
        let mut scratch = Scratch::new();
        let outcome = sc.scan(BodyKind::Json, &doc, DEPTH, &mut scratch).unwrap();
        prop_assert_eq!(scratch.counts.iter().sum::<u32>(), want_n);
        if want_n > 0 {
            prop_assert_eq!(outcome, Outcome::Found { rewritten: true });
            let got: Vec<String> = serde_json::from_slice(&scratch.out).unwrap();
            let want_strs: Vec<String> = want.into_iter().map(|(_, o)| o).collect();
            prop_assert_eq!(got, want_strs);
        } else {
            prop_assert_eq!(outcome, Outcome::Clean);
        }
        // The same texts as the values of a form body, where they are
        // read in place when nothing in them is encoded.
        let parts: Vec<String> = strs.iter().map(|t| t.replace(['&', '=', '%', '+'], " ")).collect();
        let want_n: u32 = parts.iter().map(|t| alone(t).0).sum();
        let form: Vec<u8> = parts
            .iter()
            .map(|t| format!("k={t}"))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes();
        let mut scratch = Scratch::new();
        sc.scan(BodyKind::Form, &form, DEPTH, &mut scratch).unwrap();
        prop_assert_eq!(scratch.counts.iter().sum::<u32>(), want_n);
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut scratch = Scratch::new();
        for kind in [BodyKind::Json, BodyKind::Form, BodyKind::None] {
            let _ = all().scan(kind, &body, DEPTH, &mut scratch);
        }
    }

    #[test]
    fn raw_scan_agrees_with_the_reference(s in text()) {
        let want = reference_redact(s.as_bytes());
        let mut scratch = Scratch::new();
        let outcome = ssn_scanner().scan(BodyKind::None, s.as_bytes(), DEPTH, &mut scratch).unwrap();
        prop_assert_eq!(scratch.counts[0], want.1);
        if want.1 > 0 {
            prop_assert_eq!(outcome, Outcome::Found { rewritten: true });
            prop_assert_eq!(&scratch.out, &want.0);
        } else {
            prop_assert_eq!(outcome, Outcome::Clean);
        }
    }
}

#[test]
fn json_numbers_are_scanned_and_become_strings_when_rewritten() {
    let sc = scanner(&[Detector::CreditCard], DlpAction::Mask);
    let s = scan(
        &sc,
        BodyKind::Json,
        r#"{"card": 4111111111111111, "copay": 25, "n": [4111111111111111]}"#,
    );
    assert_eq!(
        s.out,
        r#"{"card": "************1111", "copay": 25, "n": ["************1111"]}"#
    );
    assert_eq!(s.counts, counts(&[("credit_card", 2)]));
    // An ordinary number is left alone, and so is a Luhn-invalid one.
    let s = scan(
        &sc,
        BodyKind::Json,
        r#"{"amount": 4111111111111112, "x": -1.5e3}"#,
    );
    assert_eq!(s.outcome, Outcome::Clean);
}

#[test]
fn a_string_not_in_the_scanned_body_is_still_read_whole() {
    // `json_text` reads a string in place in the body when it lies there;
    // one handed in from elsewhere (with an offset that points into the
    // body) is read on its own, not through the body's bytes.
    let sc = scanner(&[Detector::Ssn], DlpAction::Deny);
    let body = br#"{"a":"x","b":"plain text, nothing"}"#;
    let elsewhere = b"ssn 123-45-6789".to_vec();
    let mut scratch = Scratch::new();
    let mut scan = sc.json_begin(body, &mut scratch);
    let s = json::JStr {
        raw: &elsewhere,
        start: 14,
        escaped: false,
    };
    sc.json_text(&mut scan, s, true, &mut scratch);
    assert_eq!(
        sc.json_outcome(&scan, &mut scratch),
        Ok(Outcome::Found { rewritten: false })
    );
    assert_eq!(scratch.counts[0], 1);
}
