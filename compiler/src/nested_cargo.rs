//! A cargo run from inside another cargo run (the build script that builds
//! the filter for wasm, the bench that builds a program natively and for
//! wasm): the outer run's settings are for its own target and profile, so
//! the nested one starts without them.
//!
//! `compiler/build.rs` includes this file as a module of its own: it may
//! use `std` only.

use std::path::Path;
use std::process::Command;

/// `cargo build` of the workspace at `root` into `target_dir`, without the
/// outer build's code generation settings. The caller adds the package,
/// the profile and the target.
pub fn build_command(root: &Path, target_dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_outer_setting) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    cmd
}

/// Whether an environment variable carries the outer build's settings:
/// flags, profile, target and build settings, wrappers, incremental
/// compilation and coverage instrumentation.
fn is_outer_setting(key: &str) -> bool {
    key.starts_with("CARGO_ENCODED_")
        || key.starts_with("CARGO_BUILD_")
        || key.starts_with("CARGO_PROFILE_")
        || key.starts_with("CARGO_TARGET_")
        || matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_INCREMENTAL"
                | "CARGO_LLVM_COV"
                | "CARGO_LLVM_COV_TARGET_DIR"
                | "LLVM_PROFILE_FILE"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_settings_are_recognised() {
        for key in [
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "LLVM_PROFILE_FILE",
        ] {
            assert!(is_outer_setting(key), "{key}");
        }
        for key in ["CARGO", "CARGO_HOME", "PATH", "RUSTUP_TOOLCHAIN"] {
            assert!(!is_outer_setting(key), "{key}");
        }
    }

    #[test]
    fn the_target_dir_is_the_callers() {
        let cmd = build_command(Path::new("/w"), Path::new("/t"));
        let dir = cmd
            .get_envs()
            .find(|(k, _)| *k == "CARGO_TARGET_DIR")
            .and_then(|(_, v)| v);
        assert_eq!(dir, Some(std::ffi::OsStr::new("/t")));
    }
}
