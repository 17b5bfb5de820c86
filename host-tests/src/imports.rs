//! What a module imports, read with `wasmparser` (independently of
//! wasmtime), and what this host leaves out.

use std::collections::BTreeSet;
use wasmparser::{Parser, Payload, TypeRef};

/// One import of a module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Import {
    pub module: String,
    pub name: String,
    /// `func`, `memory`, `table`, `global` or `tag`.
    pub kind: &'static str,
}

impl std::fmt::Display for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{} ({})", self.module, self.name, self.kind)
    }
}

/// Every import of `wasm`, in module order.
pub fn list(wasm: &[u8]) -> Result<Vec<Import>, String> {
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let Payload::ImportSection(reader) = payload {
            for import in reader.into_imports() {
                let import = import.map_err(|e| e.to_string())?;
                let kind = match import.ty {
                    TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
                    TypeRef::Memory(_) => "memory",
                    TypeRef::Table(_) => "table",
                    TypeRef::Global(_) => "global",
                    TypeRef::Tag(_) => "tag",
                };
                out.push(Import {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                    kind,
                });
            }
        }
    }
    Ok(out)
}

/// Imports of `wasm` that are not in `provided` (`(module, name)` pairs);
/// an unreadable module is reported as one entry.
pub fn missing(wasm: &[u8], provided: &BTreeSet<(String, String)>) -> Vec<String> {
    match list(wasm) {
        Ok(imports) => imports
            .into_iter()
            .filter(|i| !provided.contains(&(i.module.clone(), i.name.clone())))
            .map(|i| i.to_string())
            .collect(),
        Err(e) => vec![format!("(cannot read the imports: {e})")],
    }
}
