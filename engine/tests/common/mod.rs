//! Scanning helpers shared by the DLP test files.

#![allow(dead_code)]

use aegis_engine::builder::dlp::build_dlp;
use aegis_engine::unstable::dlp::{DlpSpec, Outcome, Scanner, Scratch};
use aegis_engine::{BodyKind, Detector, DlpAction};
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const KEY: [u8; 32] = [7; 32];
pub const DEPTH: usize = 64;

pub fn spec(detectors: &[Detector], custom: &[(&str, &str)], action: DlpAction) -> DlpSpec {
    let custom: Vec<(String, String)> = custom
        .iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    build_dlp(detectors, &custom, action, KEY).unwrap()
}

pub fn scanner(detectors: &[Detector], action: DlpAction) -> Scanner {
    Scanner::load(&spec(detectors, &[], action)).unwrap()
}

/// All built-in detectors, redacting; built once (the DFA takes a while).
pub fn all() -> &'static Scanner {
    static ALL: OnceLock<Scanner> = OnceLock::new();
    ALL.get_or_init(|| scanner(&Detector::ALL, DlpAction::Redact))
}

pub struct Scan {
    pub outcome: Outcome,
    pub out: String,
    pub counts: BTreeMap<String, u32>,
}

/// Scans `body` with a fresh scratch and checks that the outcome and the
/// rewritten body agree.
pub fn scan(sc: &Scanner, kind: BodyKind, body: &str) -> Scan {
    let mut scratch = Scratch::new();
    let outcome = sc.scan(kind, body.as_bytes(), DEPTH, &mut scratch).unwrap();
    let counts = sc
        .pattern_names()
        .zip(scratch.counts)
        .filter(|(_, c)| *c > 0)
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    let out = String::from_utf8(scratch.out.clone()).unwrap();
    match outcome {
        Outcome::Clean => assert!(scratch.out.is_empty()),
        Outcome::Found { rewritten } => {
            assert_eq!(rewritten, !scratch.out.is_empty() || body.is_empty())
        }
    }
    Scan {
        outcome,
        out,
        counts,
    }
}
