//! `aegis verify FILE --pubkey PREFIX.pub`: FILE is a bundle, or a filter
//! module from `aegis build` (recognised by the `\0asm` magic), for which
//! both the module signature and the embedded bundle's signature must be
//! by the key. A verified bundle's revision is shown: it is signed too.

use super::{exit, Error, Format};
use aegis_engine::{Envelope, LoadError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    #[arg(long, value_name = "PREFIX.pub")]
    pubkey: PathBuf,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let (file, format) = (args.file.as_path(), args.format);
    let vk = crate::keys::read_verifying_key(&args.pubkey).map_err(Error::input)?;
    let bytes = std::fs::read(file)
        .map_err(|e| Error::input(format_args!("cannot read `{}`: {e}", file.display())))?;
    let id = crate::keys::key_id(&vk);
    if bytes.starts_with(b"\0asm") {
        let signed = format!(
            "ok: `{}`: module and embedded bundle are signed by key {id}",
            file.display()
        );
        return report(file, format, verify_blob(&bytes, &vk), signed);
    }
    let result = verify_bundle(&bytes, &vk).map_err(|e| e.to_string());
    let signed = format!("ok: `{}` is signed by key {id}", file.display());
    report(file, format, result, signed)
}

/// A bundle's signature by `vk`; its revision once that holds.
fn verify_bundle(bytes: &[u8], vk: &ed25519_dalek::VerifyingKey) -> Result<u64, LoadError> {
    let env = Envelope::parse(bytes)?;
    env.check_trust(&[vk.to_bytes()])?;
    Ok(env.revision)
}

/// Both signatures of a blob: the module's and the embedded bundle's; the
/// bundle's revision once both hold.
pub(super) fn verify_blob(bytes: &[u8], vk: &ed25519_dalek::VerifyingKey) -> Result<u64, String> {
    crate::package::wasmsig::verify(bytes, vk).map_err(|e| format!("module signature: {e}"))?;
    let bundle = crate::package::blob::extract(bytes)
        .map_err(|e| e.to_string())?
        .ok_or("no bundle embedded (generic filter)")?;
    verify_bundle(&bundle, vk).map_err(|e| format!("embedded bundle: {e}"))
}

/// Prints `signed` and the revision, or says why not: a JSON answer on
/// stdout either way; in human form a signature that does not verify is an
/// error.
fn report(
    file: &Path,
    format: Format,
    result: Result<u64, String>,
    signed: String,
) -> Result<ExitCode, Error> {
    let ok = result.is_ok();
    let revision = result.as_ref().ok().copied();
    let message = match result {
        Ok(revision) => format!("{signed}, revision {revision}"),
        Err(e) => format!("invalid: `{}`: {e}", file.display()),
    };
    match format {
        Format::Json => {
            println!(
                "{}",
                serde_json::json!({"valid": ok, "message": message, "revision": revision})
            );
            Ok(ExitCode::from(if ok { exit::OK } else { exit::FAILED }))
        }
        Format::Human if ok => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Format::Human => Err(Error::rejected(message)),
    }
}
