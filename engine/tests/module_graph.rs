//! The layering of the engine and the filter, read from their sources: no
//! two modules import each other (directly or around a loop), and the
//! engine's runtime never names the builder or its IR, so that what the
//! filter links is only the loader and the evaluator.

// Test helpers outside `#[test]` fns fall outside clippy's in-test allowances.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules it names through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `dlp/fold.rs` -> `dlp`,
/// `eval.rs` -> `eval`; `None` for the crate root and the files that only
/// declare modules.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "unstable")).then(|| name.to_string())
}

/// The first path segment of every `crate::` path in `code`, including each
/// member of a `crate::{a::X, b}` group.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// The import graph of the crate whose sources are in `src`. Unit tests
/// (everything from a file's `#[cfg(test)]` on) are left out: they may
/// reach anywhere.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g = Graph::new();
    for file in files {
        let Some(from) = top_module(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let to = g.entry(from.clone()).or_default();
        to.extend(named_modules(&code).into_iter().filter(|m| *m != from));
    }
    g
}

/// A loop in `g`, as the modules along it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

#[test]
fn the_engine_has_no_import_cycle() {
    let g = graph(&src("engine"));
    assert!(g.contains_key("eval") && g.contains_key("http"), "{g:?}");
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn the_filter_has_no_import_cycle() {
    let g = graph(&src("filter"));
    assert!(
        g.contains_key("stream") && g.contains_key("config"),
        "{g:?}"
    );
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn the_runtime_never_names_the_builder() {
    let g = graph(&src("engine"));
    for (module, names) in &g {
        if matches!(module.as_str(), "builder" | "ir") {
            continue;
        }
        for builder_side in ["builder", "ir"] {
            assert!(
                !names.contains(builder_side),
                "`{module}` imports `{builder_side}`"
            );
        }
    }
}

#[test]
fn the_checker_sees_a_cycle_and_grouped_imports() {
    let named = named_modules("use crate::{a::X, b, c::{D, E}};\nfn f() { crate::d::g(); }");
    assert_eq!(named.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
