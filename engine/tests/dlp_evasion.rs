//! DLP against disguised values: the built-in digit detectors (SSN, card,
//! phone, date of birth, IBAN) find values split by JSON escapes, by
//! invisible characters (Unicode's default-ignorable code points),
//! written with full-width digits and hyphens, or with other separators;
//! in raw, JSON and form bodies; the detectors whose checks read on from
//! the match (email, API keys, JWTs, private keys) see through invisible
//! characters and full-width digits too. A redaction covers the whole
//! disguised value, the rewritten body stays valid, the validators reject
//! invalid numbers however they are written, look-alikes stay clean, and
//! a clean scan of such text allocates nothing.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use aegis_engine::builder::dlp::build_dlp;
use aegis_engine::unstable::dlp::{Outcome, Scanner, Scratch};
use aegis_engine::unstable::json::{self, Event, Parser};
use aegis_engine::{BodyKind, Detector, DlpAction};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::hint::black_box;

mod common;
use common::{all, scanner, DEPTH};

/// Invisible characters a value can be split with: zero-width ones,
/// direction marks and controls, a combining grapheme joiner, a variation
/// selector, a tag character, fillers.
const INVISIBLE: [char; 16] = [
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{2060}',
    '\u{FEFF}',
    '\u{AD}',
    '\u{200E}',
    '\u{200F}',
    '\u{202E}',
    '\u{2066}',
    '\u{34F}',
    '\u{FE0F}',
    '\u{E0041}',
    '\u{3164}',
    '\u{180E}',
    '\u{1D173}',
];

/// `(outcome, rewritten body, detections by detector)`.
fn scan(sc: &Scanner, kind: BodyKind, body: &str) -> (Outcome, String, BTreeMap<String, u32>) {
    let s = common::scan(sc, kind, body);
    (s.outcome, s.out, s.counts)
}

fn one(name: &str) -> BTreeMap<String, u32> {
    BTreeMap::from([(name.to_string(), 1)])
}

/// `s` as a JSON string literal; with `escape_all`, every non-ASCII
/// character (invisible and full-width ones included) as `\uXXXX`.
fn json_lit(s: &str, escape_all: bool) -> String {
    if !escape_all {
        let mut out = Vec::new();
        json::write_escaped(&mut out, s.as_bytes());
        return String::from_utf8(out).unwrap();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// `s` percent-encoded the way browsers write form values.
fn form_enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent/plus-decodes a form component.
fn form_dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The decoded strings of a valid JSON document, in order.
fn json_strings(doc: &str) -> Vec<String> {
    json::validate(doc.as_bytes(), DEPTH).unwrap();
    let mut p = Parser::new(doc.as_bytes(), DEPTH);
    let mut out = Vec::new();
    while let Some(ev) = p.next().unwrap() {
        if let Event::Key(s) | Event::Str(s) = ev {
            out.push(String::from_utf8(s.bytes().collect()).unwrap());
        }
    }
    out
}

/// `text`, between other words, is detected as `name` and redacted as a
/// whole in a raw body, in a JSON string (literal and fully escaped) and
/// in a form value; the rewritten JSON and form bodies stay valid and
/// decode to the redacted text.
fn assert_detects(name: &str, text: &str) {
    let want = format!("before [REDACTED:{name}] after");
    let plain = format!("before {text} after");
    let (_, out, counts) = scan(all(), BodyKind::None, &plain);
    assert_eq!(out, want, "{name}: {text:?} raw");
    assert_eq!(counts, one(name), "{name}: {text:?} raw");

    for escape_all in [false, true] {
        let body = format!("{{\"k\":{},\"n\":[1,true]}}", json_lit(&plain, escape_all));
        let (_, out, counts) = scan(all(), BodyKind::Json, &body);
        assert_eq!(counts, one(name), "{name}: {text:?} in {body}");
        assert_eq!(
            json_strings(&out),
            ["k", want.as_str(), "n"],
            "{name}: {text:?} in {body}"
        );
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["k"], want.as_str());
        assert_eq!(back["n"], serde_json::json!([1, true]));
    }

    let body = format!("a=1&v={}&b=2", form_enc(&plain));
    let (_, out, counts) = scan(all(), BodyKind::Form, &body);
    assert_eq!(counts, one(name), "{name}: {text:?} in {body}");
    let parts: Vec<&str> = out.split('&').collect();
    assert_eq!(parts.len(), 3, "{out}");
    assert_eq!(parts[0], "a=1");
    assert_eq!(parts[2], "b=2");
    let value = parts[1].strip_prefix("v=").unwrap();
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*-._+%".contains(&b)),
        "{out}"
    );
    assert_eq!(form_dec(value), want, "{name}: {text:?} in {body}");
}

/// `text` is clean in a raw body, a JSON string and a form value.
fn assert_clean(text: &str) {
    let plain = format!("before {text} after");
    let (o, out, counts) = scan(all(), BodyKind::None, &plain);
    assert_eq!(o, Outcome::Clean, "{text:?} => {out:?} {counts:?}");
    let body = format!("{{\"k\":{}}}", json_lit(&plain, true));
    assert_eq!(
        scan(all(), BodyKind::Json, &body).0,
        Outcome::Clean,
        "{body}"
    );
    let body = format!("v={}", form_enc(&plain));
    assert_eq!(
        scan(all(), BodyKind::Form, &body).0,
        Outcome::Clean,
        "{body}"
    );
}

/// `value` with `sep` between every two characters.
fn spread(value: &str, sep: &str) -> String {
    let chars: Vec<String> = value.chars().map(String::from).collect();
    chars.join(sep)
}

/// ASCII digits and `-` as their full-width forms.
fn full_width(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(0xFF10 + (c as u32 - '0' as u32)).unwrap(),
            '-' => '\u{FF0D}',
            c => c,
        })
        .collect()
}

/// One valid value per digit detector.
const SAMPLES: [(&str, &str); 14] = [
    ("ssn", "123-45-6789"),
    ("ssn", "123 45 6789"),
    ("ssn", "123.45.6789"),
    ("credit_card", "4111111111111111"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "4111-1111-1111-1111"),
    ("credit_card", "4111.1111.1111.1111"),
    ("credit_card", "3782.822463.10005"),
    ("phone", "(555) 123-4567"),
    ("phone", "+1 555-123-4567"),
    ("dob", "1990-02-28"),
    ("dob", "28.02.1990"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "DE89370400440532013000"),
];

// ---------------------------------------------------------------- escapes

#[test]
fn an_ssn_split_by_json_escapes_is_found() {
    let (_, out, counts) = scan(all(), BodyKind::Json, r#"{"a":"123-45-\u0036789"}"#);
    assert_eq!(out, r#"{"a":"[REDACTED:ssn]"}"#);
    assert_eq!(counts, one("ssn"));
    // Escaped invisible and full-width characters are decoded first, too.
    let body = r#"{"a":"ssn 123\u200b-45-\uff16789 ok"}"#;
    let (_, out, counts) = scan(all(), BodyKind::Json, body);
    assert_eq!(out, r#"{"a":"ssn [REDACTED:ssn] ok"}"#);
    assert_eq!(counts, one("ssn"));
    // And so are percent-escapes in form values.
    let (_, out, _) = scan(all(), BodyKind::Form, "a=123%E2%80%8B-45-%EF%BC%96789");
    assert_eq!(out, "a=%5BREDACTED%3Assn%5D");
}

// ---------------------------------------------------------------- invisible

#[test]
fn invisible_characters_between_the_characters_are_ignored() {
    for (name, value) in SAMPLES {
        for c in INVISIBLE {
            let sep = c.to_string();
            // Between every two characters, and runs of several.
            assert_detects(name, &spread(value, &sep));
            assert_detects(name, &spread(value, &sep.repeat(3)));
        }
        // A mix of all of them.
        assert_detects(name, &spread(value, &INVISIBLE.iter().collect::<String>()));
    }
    for t in [
        "123\u{200B}-45-6789",
        "4111\u{200B}1111\u{200B}1111\u{200B}1111",
        "4111\u{AD}1111\u{AD}1111\u{AD}1111",
        "555\u{2060}.123.4567",
        "1990-0\u{FEFF}2-28",
        "D\u{200C}E89370400440532013000",
    ] {
        let name = match t.chars().next() {
            Some('D') => "iban",
            _ if t.starts_with("123") => "ssn",
            _ if t.starts_with("4111") => "credit_card",
            _ if t.starts_with("555") => "phone",
            _ => "dob",
        };
        assert_detects(name, t);
    }
}

#[test]
fn invisible_characters_around_a_value_stay() {
    // Only what lies between the value's characters is part of it.
    let (_, out, _) = scan(all(), BodyKind::None, "x \u{200B}123-45-6789\u{200B} y");
    assert_eq!(out, "x \u{200B}[REDACTED:ssn]\u{200B} y");
    let (_, out, _) = scan(
        all(),
        BodyKind::None,
        "\u{FEFF}\u{FEFF}4111111111111111\u{AD}",
    );
    assert_eq!(out, "\u{FEFF}\u{FEFF}[REDACTED:credit_card]\u{AD}");
    // Mask keeps the invisible characters inside the value, as separators.
    let sc = scanner(&[Detector::Ssn], DlpAction::Mask);
    let (_, out, _) = scan(&sc, BodyKind::None, "123\u{200B}-45-6789");
    assert_eq!(out, "***\u{200B}-**-6789");
}

#[test]
fn other_detectors_and_custom_regexes_read_the_same_text() {
    // The DFAs never see invisible characters: a validator that reads the
    // digits back (AWS key ids here) finds the value too.
    let t = "AKIA\u{200B}IOSF\u{FEFF}ODNN7EXAMPLE";
    assert_detects("aws_access_key", t);
    // Custom regexes read full-width digits and hyphens as ASCII...
    let custom = [("pt".to_string(), r"\bPT-[0-9]{4}\b".to_string())];
    let sp = build_dlp(&[Detector::Ssn], &custom, DlpAction::Redact, [7; 32]).unwrap();
    let sc = Scanner::load(&sp).unwrap();
    let (_, out, _) = scan(
        &sc,
        BodyKind::None,
        "id PT－１２\u{200D}３４, ssn １２３-４５-６７８９",
    );
    assert_eq!(out, "id [REDACTED:pt], ssn [REDACTED:ssn]");
    // ...so one spelled with them cannot match: the scanner shows it none.
    let custom = [("fw".to_string(), "[０-９]{4}".to_string())];
    let sp = build_dlp(&[], &custom, DlpAction::Redact, [7; 32]).unwrap();
    let sc = Scanner::load(&sp).unwrap();
    assert_eq!(scan(&sc, BodyKind::None, "１２３４").0, Outcome::Clean);
}

/// One valid value per detector whose check reads text, not digits: the
/// check extends or confirms the DFA's head by reading on from it.
const TEXT_SAMPLES: [(&str, &str); 8] = [
    ("email", "jane.doe+1@mail.example.com"),
    ("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("api_key", "sk-proj-abc_DEF-0123456789xyz-tail"),
    ("api_key", "ghp_0123456789abcdefABCD"),
    ("api_key", "xoxb-123456789012-1234567890123-AbCd"),
    ("api_key", "AIzaSyA0123456789abcdefghijklmnopqrstuv"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLV9f",
    ),
    (
        "private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END RSA PRIVATE KEY-----",
    ),
];

#[test]
fn invisible_characters_inside_text_values_are_ignored() {
    // The checks that extend a head (a token's prefix and characters, an
    // email's local part and domain, a JWT's parts, a PEM block) read the
    // text as the DFAs do: a value split anywhere is redacted whole.
    for (name, value) in TEXT_SAMPLES {
        assert_detects(name, value);
        for c in INVISIBLE {
            assert_detects(name, &spread(value, &c.to_string()));
        }
        assert_detects(name, &spread(value, &INVISIBLE.iter().collect::<String>()));
        assert_detects(name, &full_width(value));
        // One invisible character after each character in turn.
        let chars: Vec<char> = value.chars().collect();
        for i in 1..chars.len() {
            let mut t: String = chars[..i].iter().collect();
            t.push('\u{200B}');
            t.extend(&chars[i..]);
            assert_detects(name, &t);
        }
    }
}

#[test]
fn text_values_too_short_without_their_invisible_characters_stay_clean() {
    // Invisible characters count for nothing: a token one character short
    // stays short however many of them it holds.
    for t in [
        "ghp_0123456789abcde",
        "sk_live_012345678",
        "AIzaSyA0123456789abcdefghijklmnopqrst",
        "a@b.c",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
        "-----BEGIN CERTIFICATE-----\nMIIB",
    ] {
        assert_clean(t);
        assert_clean(&spread(t, "\u{200B}\u{FEFF}"));
    }
}

// ---------------------------------------------------------------- full width

#[test]
fn full_width_digits_and_hyphens_are_digits_and_hyphens() {
    for (name, value) in SAMPLES {
        assert_detects(name, &full_width(value));
        // Mixed with ASCII, and with invisible characters.
        let mixed: String = value
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    full_width(&c.to_string())
                } else {
                    c.to_string()
                }
            })
            .collect();
        assert_detects(name, &mixed);
        assert_detects(name, &spread(&full_width(value), "\u{200B}"));
    }
    for t in [
        "１２３-４５-６７８９",
        "１２３－４５－６７８９",
        "123－45－6789",
    ] {
        assert_detects("ssn", t);
    }
    let sc = scanner(&[Detector::Ssn], DlpAction::Mask);
    let (_, out, _) = scan(&sc, BodyKind::None, "１２３-４５-６７８９");
    assert_eq!(out, "***-**-６７８９");
}

#[test]
fn validators_reject_invalid_numbers_in_any_disguise() {
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "4111111111111112",
        "4111 1111 1111 1112",
        "4111.1111.1111.1112",
        "1990-02-30",
        "2023-02-29",
        "13/01/1990",
        "DE89 3704 0044 0532 0130 01",
        "DE88370400440532013000",
    ] {
        assert_clean(bad);
        assert_clean(&full_width(bad));
        assert_clean(&spread(bad, "\u{200B}"));
        assert_clean(&spread(&full_width(bad), "\u{AD}\u{FEFF}"));
    }
}

// ---------------------------------------------------------------- separators

#[test]
fn separators() {
    for t in ["123-45-6789", "123 45 6789", "123.45.6789"] {
        assert_detects("ssn", t);
    }
    for t in [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111.1111.1111.1111",
        "4012.8888.8888.1881",
        "3782 822463 10005",
        "3782-822463-10005",
        "3782.822463.10005",
    ] {
        assert_detects("credit_card", t);
    }
    // One kind of separator per value.
    for t in [
        "123-45 6789",
        "123.45-6789",
        "4111.1111 1111.1111",
        "4111-1111.1111-1111",
    ] {
        assert_clean(t);
    }
}

// ---------------------------------------------------------------- look-alikes

#[test]
fn look_alikes_stay_clean() {
    for t in [
        "1.2.3",
        "v1.2.3.4",
        "version 10.20.30",
        "10.0.0.1",
        "192.168.100.200",
        "order 123456789",
        "123456789",
        "１２３４５６７８９",
        "1234.5678",
        "2024.01.15",
        "12.34.56",
        "1.23.4567",
        "12.345.6789",
        "１.２.３",
        // Glued to a word or digit: invisible characters do not split it.
        "x\u{200B}123-45-6789",
        "9\u{200B}123-45-6789",
        "123-45-6789\u{AD}0",
        "１１２３-４５-６７８９",
        "123-45-6789１",
        // Other look-alike characters are not folded.
        "123\u{2010}45\u{2010}6789",
        "１２３／４５／６７８９",
    ] {
        assert_clean(t);
    }
}

// ---------------------------------------------------------------- bodies

#[test]
fn several_disguised_values_in_one_document() {
    let body = concat!(
        r#"{"note":"ssn １２３－４５－６７８９, card 4111\u200b1111\u200b1111\u200b1111","#,
        r#""list":["DE89\u00ad3704\u00ad0044\u00ad0532\u00ad0130\u00ad00","clean １.２.３"],"#,
        r#""１２３ ４５ ６７８９":{"n":4111111111111111}}"#
    );
    let (o, out, counts) = scan(all(), BodyKind::Json, body);
    assert_eq!(o, Outcome::Found { rewritten: true });
    assert_eq!(
        counts,
        BTreeMap::from([
            ("credit_card".to_string(), 2),
            ("iban".to_string(), 1),
            ("ssn".to_string(), 2)
        ])
    );
    assert_eq!(
        json_strings(&out),
        [
            "note",
            "ssn [REDACTED:ssn], card [REDACTED:credit_card]",
            "list",
            "[REDACTED:iban]",
            "clean １.２.３",
            "[REDACTED:ssn]",
            "n",
            "[REDACTED:credit_card]",
        ]
    );
}

/// About 16 KB of clean JSON full of full-width characters, invisible
/// characters and digits that are no detection.
fn clean_doc() -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < 16 * 1024 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"name":"ｗｉｄｇｅｔ　{i}\u200b号","note":"１.２.{i}\u00ad v{i}\ufeff.{i} －{i}－","raw":"Ｎｏ．{i:05}​⁠"}}"#
        ));
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

#[test]
fn a_clean_scan_of_disguise_characters_allocates_nothing() {
    let doc = clean_doc();
    let form = "a=%EF%BC%91%EF%BC%92%EF%BC%93%E2%80%8B4&b=%C2%AD%EF%BB%BF".as_bytes();
    let sc = all();
    let mut scratch = Scratch::new();
    let bodies = [
        (BodyKind::Json, &doc[..]),
        (BodyKind::Form, form),
        (BodyKind::None, &doc[..]),
    ];
    // Warm up: the decode buffer grows to the longest escaped string.
    for (kind, body) in bodies {
        assert_eq!(
            sc.scan(kind, body, DEPTH, &mut scratch).unwrap(),
            Outcome::Clean
        );
    }
    let mut outcomes = Vec::with_capacity(30);
    let info = allocation_counter::measure(|| {
        for _ in 0..10 {
            for (kind, body) in bodies {
                let o = sc.scan(kind, black_box(body), DEPTH, &mut scratch);
                outcomes.push(black_box(o).map_err(|_| ()));
            }
        }
    });
    assert_eq!(
        info.count_total, 0,
        "clean scans allocated {} times",
        info.count_total
    );
    assert!(outcomes.iter().all(|o| *o == Ok(Outcome::Clean)));
}

// ---------------------------------------------------------------- property

/// `value` disguised: per character `(full_width, invisible, run)` from
/// `how` (cycled): a digit or `-` written full width, and after it (unless
/// last) a run of `run` copies of `INVISIBLE[invisible]`.
fn disguise(value: &str, how: &[(bool, usize, usize)]) -> String {
    let n = value.chars().count();
    let mut out = String::new();
    for (i, (c, &(fw, inv, run))) in value.chars().zip(how.iter().cycle()).enumerate() {
        out.push_str(&if fw {
            full_width(&c.to_string())
        } else {
            c.to_string()
        });
        if i + 1 < n {
            for _ in 0..run {
                out.push(INVISIBLE[inv % INVISIBLE.len()]);
            }
        }
    }
    out
}

/// A Luhn-valid number: `digits` and a check digit.
fn luhn_complete(digits: &[u8]) -> String {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    digits
        .iter()
        .map(|d| char::from(b'0' + d))
        .chain(std::iter::once(char::from_digit(check, 10).unwrap()))
        .collect()
}

fn how() -> impl Strategy<Value = Vec<(bool, usize, usize)>> {
    prop::collection::vec((any::<bool>(), 0usize..INVISIBLE.len(), 0usize..3), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn disguised_values_are_redacted_whole(
        area in 1u32..900,
        group in 1u32..100,
        serial in 1u32..10000,
        sep in prop::sample::select(vec!['-', ' ', '.']),
        card in prop::collection::vec(0u8..10, 15),
        card_sep in prop::sample::select(vec!["", " ", "-", "."]),
        how in how(),
    ) {
        prop_assume!(area != 666);
        let ssn = format!("{area:03}{sep}{group:02}{sep}{serial:04}");
        let number = luhn_complete(&card);
        let groups: Vec<&str> = (0..4).map(|i| &number[i * 4..i * 4 + 4]).collect();
        let card = groups.join(card_sep);
        for (name, value) in [("ssn", ssn), ("credit_card", card)] {
            let text = disguise(&value, &how);
            let body = format!("x {text} y");
            let (_, out, counts) = scan(all(), BodyKind::None, &body);
            prop_assert_eq!(out, format!("x [REDACTED:{name}] y"), "{:?}", text);
            prop_assert_eq!(counts, one(name));
            let body = format!("[{}]", json_lit(&format!("x {text} y"), true));
            let (_, out, _) = scan(all(), BodyKind::Json, &body);
            prop_assert_eq!(json_strings(&out), [format!("x [REDACTED:{name}] y")]);
        }
    }

    #[test]
    fn disguised_invalid_ssns_stay_clean(
        area in prop_oneof![Just(0u32), Just(666), 900u32..1000],
        serial in 1u32..10000,
        how in how(),
    ) {
        let text = disguise(&format!("{area:03}-12-{serial:04}"), &how);
        let (o, out, _) = scan(all(), BodyKind::None, &format!("x {text} y"));
        prop_assert_eq!(o, Outcome::Clean, "{:?} => {:?}", text, out);
    }
}
