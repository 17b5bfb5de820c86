//! The YAML front-end: policy files -> validated IR, or diagnostics that
//! point at file:line:col with a help line.
//!
//! Four document kinds share the files: tool catalogs (`kind: ToolCatalog`),
//! at most one identity document (`kind: Identity`), at most one limits
//! document (`kind: Limits`) and agent policies (`agent: ...`). Catalogs are read first, so an agent policy may come
//! before the catalog that defines its tools.

mod agent;
mod catalog;
mod conditions;
mod diag;
mod hosts;
mod identity;
mod limits;
mod read;
pub(crate) mod yaml;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aegis_engine::ir;
use sha2::{Digest, Sha256};

pub use diag::{group, render, render_colored, to_json, Diagnostic, Severity, SourceFile};
pub(crate) use read::Cx;

use read::Loc;
use yaml::Node;

/// A successful compile: the IR and the warnings worth showing.
#[derive(Debug)]
pub struct Loaded {
    pub policy: ir::Policy,
    pub warnings: Vec<Diagnostic>,
}

/// Loads policy sources into IR.
///
/// `paths`: files or directories (recursive, `*.yaml` / `*.yml`, skipping
/// `*.cases.yaml` / `*.cases.yml` and hidden entries). Files named
/// explicitly are read whatever their extension, except test-case files.
/// `version`: policy version override; when `None`, the first 12 hex chars
/// of a SHA-256 over all sources (sorted by path; each path and content
/// hashed). A directory's files are hashed by their path relative to it, a
/// file given directly by its file name, so the version does not depend on
/// the working directory.
///
/// On failure the list holds every error found, and the warnings too.
pub fn load(paths: &[PathBuf], version: Option<&str>) -> Result<Loaded, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let found = collect_files(paths, &mut diags);
    if found.is_empty() && diags.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
        diags.push(
            Diagnostic::bare(
                Severity::Error,
                format!("no policy files found in {}", shown.join(", ")),
            )
            .with_help("policy files end in `.yaml` or `.yml`"),
        );
    }
    let mut sources = Vec::with_capacity(found.len());
    for (path, hash_name) in found {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                sources.push((
                    SourceFile::new(path.display().to_string(), dir, text),
                    hash_name,
                ));
            }
            Err(e) => diags.push(Diagnostic::bare(
                Severity::Error,
                format!("cannot read `{}`: {e}", path.display()),
            )),
        }
    }
    compile(sources, version, diags)
}

/// Like [`load`], from in-memory sources `(name, text)`; `public_key_file`
/// paths are resolved against the directory part of `name`.
pub fn load_sources(
    sources: &[(String, String)],
    version: Option<&str>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let files = sources
        .iter()
        .map(|(name, text)| {
            let dir = Path::new(name)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            (
                SourceFile::new(name.clone(), dir, text.clone()),
                name.clone(),
            )
        })
        .collect();
    compile(files, version, Vec::new())
}

/// Content hash version: first 12 hex chars of SHA-256 over the sources
/// sorted by name, each name and text length-prefixed.
pub fn content_version(sources: &[(String, &str)]) -> String {
    let mut sorted: Vec<&(String, &str)> = sources.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, text) in sorted {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files to read, with the name each is hashed under.
fn collect_files(paths: &[PathBuf], diags: &mut Vec<Diagnostic>) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    for root in paths {
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {
                let mut found = Vec::new();
                walk(root, &mut found, diags);
                found.sort();
                for p in found {
                    let rel = p
                        .strip_prefix(root)
                        .map(|r| {
                            r.components()
                                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                        .unwrap_or_else(|_| p.display().to_string());
                    out.push((p, rel));
                }
            }
            // A shell glob such as `policies/*.yaml` also matches the test
            // cases; they are never policy.
            Ok(_) if is_cases_file(&root.file_name().unwrap_or_default().to_string_lossy()) => {}
            Ok(_) => {
                let name = root.file_name().map_or_else(
                    || root.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                out.push((root.clone(), name));
            }
            Err(e) => diags.push(Diagnostic::bare(
                Severity::Error,
                format!("cannot read `{}`: {e}", root.display()),
            )),
        }
    }
    // The same file named twice (directly and through its directory) would
    // define everything twice.
    let mut seen = std::collections::HashSet::new();
    out.retain(|(p, _)| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::bare(
                Severity::Error,
                format!("cannot read `{}`: {e}", dir.display()),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out, diags);
        } else if is_policy_file(&name) {
            out.push(path);
        }
    }
}

fn is_policy_file(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !is_cases_file(name)
}

fn is_cases_file(name: &str) -> bool {
    name.ends_with(".cases.yaml") || name.ends_with(".cases.yml")
}

/// What a document is, decided by `kind` or the `agent` key.
enum DocKind {
    Catalog,
    Identity,
    Limits,
    Agent,
}

const KINDS: &[&str] = &["ToolCatalog", "Identity", "Limits", "AgentPolicy"];

fn classify(cx: &mut Cx<'_>, doc: &Node) -> Option<DocKind> {
    if doc.as_map().is_none() {
        cx.error(
            doc,
            format!(
                "a policy document must be a mapping, found {}",
                doc.type_name()
            ),
            "start the document with `kind: ToolCatalog`, `kind: Identity` or `agent: <name>`",
        );
        return None;
    }
    match doc.get("kind") {
        Some(k) => match k.as_str() {
            Some("ToolCatalog") => Some(DocKind::Catalog),
            Some("Identity") => Some(DocKind::Identity),
            Some("Limits") => Some(DocKind::Limits),
            Some("AgentPolicy") => {
                if doc.get("agent").is_none() {
                    cx.error(
                        doc,
                        "missing key `agent` in an agent policy",
                        "name the agent: `agent: <name>`",
                    );
                    return None;
                }
                Some(DocKind::Agent)
            }
            _ => {
                let shown = k.scalar_text().unwrap_or_else(|| k.type_name().to_owned());
                cx.error(
                    k,
                    format!("unknown document kind `{shown}`"),
                    diag::suggest(&shown, "known kinds", KINDS),
                );
                None
            }
        },
        None if doc.get("agent").is_some() => Some(DocKind::Agent),
        None => {
            cx.error(
                doc,
                "cannot tell what this document is",
                "add `kind: ToolCatalog` or `kind: Identity`, or an `agent:` key for an agent policy",
            );
            None
        }
    }
}

fn compile(
    sources: Vec<(Arc<SourceFile>, String)>,
    version: Option<&str>,
    mut diags: Vec<Diagnostic>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut docs: Vec<(Arc<SourceFile>, Node, DocKind)> = Vec::new();
    let mut regexes = std::collections::HashSet::new();
    for (file, _) in &sources {
        match yaml::parse_documents(file) {
            Ok(nodes) => {
                for node in nodes {
                    let mut cx = Cx {
                        file,
                        diags: &mut diags,
                        regexes: &mut regexes,
                    };
                    if let Some(kind) = classify(&mut cx, &node) {
                        docs.push((Arc::clone(file), node, kind));
                    }
                }
            }
            Err(d) => diags.push(d),
        }
    }

    let mut tools: Vec<catalog::ToolDef> = Vec::new();
    for (file, node, _) in docs
        .iter()
        .filter(|(_, _, k)| matches!(k, DocKind::Catalog))
    {
        let mut cx = Cx {
            file,
            diags: &mut diags,
            regexes: &mut regexes,
        };
        catalog::parse(&mut cx, node, &mut tools);
    }

    let mut identity: Option<aegis_engine::jwt::IdentityConfig> = None;
    let mut identity_seen: Option<Loc> = None;
    for (file, node, _) in docs
        .iter()
        .filter(|(_, _, k)| matches!(k, DocKind::Identity))
    {
        let mut cx = Cx {
            file,
            diags: &mut diags,
            regexes: &mut regexes,
        };
        let at = node.key_node("kind").unwrap_or(node);
        if let Some(first) = &identity_seen {
            let d = cx
                .diag(Severity::Error, at, "a second identity document")
                .with_label("second identity")
                .with_help(format!(
                    "the identity is already defined at {}; keep one `kind: Identity` document",
                    first.describe()
                ))
                .with_secondary(&first.file, first.offset, first.len, "first identity");
            cx.push(d);
            continue;
        }
        identity_seen = Some(cx.loc(at));
        identity = identity::parse(&mut cx, node);
    }

    let mut limits = aegis_engine::Limits::default();
    let mut limits_seen = false;
    for (file, node, _) in docs.iter().filter(|(_, _, k)| matches!(k, DocKind::Limits)) {
        let mut cx = Cx {
            file,
            diags: &mut diags,
            regexes: &mut regexes,
        };
        if limits_seen {
            let at = node.key_node("kind").unwrap_or(node);
            cx.error(
                at,
                "a second limits document",
                "keep one `kind: Limits` document for the whole policy",
            );
            continue;
        }
        limits_seen = true;
        if let Some(l) = limits::parse(&mut cx, node) {
            limits = l;
        }
    }

    let mut agents: Vec<ir::Agent> = Vec::new();
    let mut seen_agents = Vec::new();
    for (file, node, _) in docs.iter().filter(|(_, _, k)| matches!(k, DocKind::Agent)) {
        let mut cx = Cx {
            file,
            diags: &mut diags,
            regexes: &mut regexes,
        };
        if let Some(a) = agent::parse(&mut cx, node, &mut tools, &mut seen_agents) {
            agents.push(a);
        }
    }

    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let version = match version {
        Some(v) => v.to_owned(),
        None => {
            let named: Vec<(String, &str)> =
                sources.iter().map(|(f, n)| (n.clone(), f.text())).collect();
            content_version(&named)
        }
    };
    Ok(Loaded {
        policy: ir::Policy {
            version,
            identity,
            tools: tools.into_iter().map(|t| t.tool).collect(),
            agents,
            limits,
        },
        warnings: diags,
    })
}
