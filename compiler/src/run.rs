//! Running recorded requests (test cases) through the engine, and checking
//! results against expectations. `aegis eval`, `aegis test` and the
//! wasmtime / Envoy runners all compare against what this produces.

use crate::cases::{Case, Expect};
use crate::frontend::{self, Diagnostic, Loaded};
use aegis_engine::build::bundle::{compile, BuildOptions};
use aegis_engine::bundle::{Bundle, MAGIC};
use aegis_engine::eval::{Caller, Decision, Request, Scratch, Verdict};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What one case produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub name: String,
    pub decision: String,
    pub reason: String,
    pub rule: Option<String>,
    pub policy_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip)]
    pub agent: Option<String>,
    #[serde(skip)]
    pub tool: Option<String>,
    #[serde(skip)]
    pub action: Option<String>,
}

/// Splits `scheme://authority/path?query` into authority and path+query.
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find(['/', '?']) {
        Some(i) => {
            let (a, p) = rest.split_at(i);
            (a, p)
        }
        None => (rest, "/"),
    }
}

/// `p` with a leading `/` when it starts with `?`.
fn normalize_path(p: &str) -> std::borrow::Cow<'_, str> {
    if p.starts_with('?') {
        std::borrow::Cow::Owned(format!("/{p}"))
    } else {
        std::borrow::Cow::Borrowed(p)
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Evaluates one case against `bundle`.
pub fn run_case(bundle: &Bundle, case: &Case, scratch: &mut Scratch) -> Outcome {
    let (authority, path) = split_url(&case.request.url);
    let path = normalize_path(path);
    let body = case.request.body.as_deref().unwrap_or("").as_bytes();
    let req = Request {
        method: &case.request.method,
        authority,
        path: &path,
        headers: case.request.headers.as_slice(),
        body: Some(body),
    };
    let caller = match &case.agent {
        Some(a) => Caller::Given {
            agent: a,
            tenant: case.tenant.as_deref(),
        },
        None => Caller::FromRequest,
    };
    let d = bundle.decide(&req, caller, case.now.unwrap_or_else(now_unix), scratch);
    outcome(bundle, &case.name, &d, scratch)
}

/// Renders a decision as an [`Outcome`]; the sanitized body comes from the
/// scratch.
pub fn outcome(bundle: &Bundle, name: &str, d: &Decision<'_>, scratch: &Scratch) -> Outcome {
    let body = (d.verdict == Verdict::Sanitize)
        .then(|| String::from_utf8_lossy(&scratch.dlp.out).into_owned());
    Outcome {
        name: name.to_string(),
        decision: d.verdict.as_str().to_string(),
        reason: d.reason.to_string(),
        rule: d.rule.map(str::to_string),
        policy_version: bundle.policy_version().to_string(),
        body,
        agent: d.agent.map(str::to_string),
        tool: d.tool.map(str::to_string),
        action: d.action.map(str::to_string),
    }
}

/// Mismatches between what a case expects and what it got; empty = pass.
pub fn check(expect: &Expect, got: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    if expect.decision != got.decision {
        out.push(format!(
            "decision: expected `{}`, got `{}` ({})",
            expect.decision, got.decision, got.reason
        ));
    }
    if let Some(r) = &expect.reason_contains {
        if !got.reason.contains(r.as_str()) {
            out.push(format!(
                "reason: expected to contain `{r}`, got `{}`",
                got.reason
            ));
        }
    }
    if let Some(r) = &expect.rule {
        if got.rule.as_deref() != Some(r.as_str()) {
            out.push(format!(
                "rule: expected `{r}`, got `{}`",
                got.rule.as_deref().unwrap_or("none")
            ));
        }
    }
    let body = got.body.as_deref().unwrap_or("");
    if let Some(b) = &expect.body {
        if got.body.as_deref() != Some(b.as_str()) {
            out.push(format!("body: expected `{b}`, got `{body}`"));
        }
    }
    for s in &expect.body_contains {
        if !body.contains(s.as_str()) {
            out.push(format!("body: expected to contain `{s}`, got `{body}`"));
        }
    }
    for s in &expect.body_not_contains {
        if body.contains(s.as_str()) {
            out.push(format!("body: expected not to contain `{s}`, got `{body}`"));
        }
    }
    out
}

/// A policy set ready to evaluate, from sources or a compiled bundle file.
pub struct Loadedbundle {
    pub bundle: Bundle,
    pub warnings: Vec<Diagnostic>,
}

/// Why a policy set could not be loaded.
#[derive(Debug)]
pub enum LoadFailure {
    Diagnostics(Vec<Diagnostic>),
    Other(String),
}

fn is_bundle_file(p: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let mut head = [0u8; 8];
    f.read_exact(&mut head).is_ok() && &head == MAGIC
}

/// Loads `paths` (policy files/dirs, or one compiled bundle).
pub fn load_policy_set(paths: &[PathBuf]) -> Result<Loadedbundle, LoadFailure> {
    if let [one] = paths {
        if one.is_file() && is_bundle_file(one) {
            let bytes = std::fs::read(one)
                .map_err(|e| LoadFailure::Other(format!("cannot read `{}`: {e}", one.display())))?;
            let bundle = Bundle::load(&bytes, &[])
                .map_err(|e| LoadFailure::Other(format!("`{}`: {e}", one.display())))?;
            return Ok(Loadedbundle {
                bundle,
                warnings: Vec::new(),
            });
        }
    }
    let Loaded { policy, warnings } =
        frontend::load(paths, None).map_err(LoadFailure::Diagnostics)?;
    let bytes = compile(&policy, &BuildOptions::default(), None).map_err(LoadFailure::Other)?;
    let bundle = Bundle::load(&bytes, &[]).map_err(|e| LoadFailure::Other(e.to_string()))?;
    Ok(Loadedbundle { bundle, warnings })
}
