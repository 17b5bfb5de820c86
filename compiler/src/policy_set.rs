//! Loading a policy set to evaluate it: YAML policy files compiled with
//! the front-end, or one compiled bundle file. `aegis eval` and
//! `aegis test` run their cases against what this loads.

use crate::frontend::{self, Diagnostic, Loaded};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::{Bundle, BUNDLE_MAGIC as MAGIC};
use std::path::{Path, PathBuf};

/// A policy set ready to evaluate, from sources or a compiled bundle file.
pub struct LoadedPolicySet {
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
pub fn load_policy_set(paths: &[PathBuf]) -> Result<LoadedPolicySet, LoadFailure> {
    if let [one] = paths {
        if one.is_file() && is_bundle_file(one) {
            let bytes = std::fs::read(one)
                .map_err(|e| LoadFailure::Other(format!("cannot read `{}`: {e}", one.display())))?;
            let bundle = Bundle::load(&bytes, &[])
                .map_err(|e| LoadFailure::Other(format!("`{}`: {e}", one.display())))?;
            return Ok(LoadedPolicySet {
                bundle,
                warnings: Vec::new(),
            });
        }
    }
    let Loaded { policy, warnings } =
        frontend::load(paths, None).map_err(LoadFailure::Diagnostics)?;
    let bytes = compile(&policy, &BuildOptions::default(), None)
        .map_err(|e| LoadFailure::Other(e.to_string()))?;
    let bundle = Bundle::load(&bytes, &[]).map_err(|e| LoadFailure::Other(e.to_string()))?;
    Ok(LoadedPolicySet { bundle, warnings })
}
