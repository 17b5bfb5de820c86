//! `aegis verify FILE --pubkey PREFIX.pub`

use super::{exit, Format};
use aegis_engine::bundle::Envelope;
use std::path::Path;

pub fn run(file: &Path, pubkey: &Path, format: Format) -> i32 {
    let vk = match crate::keys::read_verifying_key(pubkey) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", file.display());
            return exit::ERROR;
        }
    };
    let result = Envelope::parse(&bytes).and_then(|env| env.check_trust(&[vk.to_bytes()]));
    let ok = result.is_ok();
    let message = match &result {
        Ok(()) => format!(
            "ok: `{}` is signed by key {}",
            file.display(),
            crate::keys::key_id(&vk)
        ),
        Err(e) => format!("invalid: `{}`: {e}", file.display()),
    };
    match format {
        Format::Json => println!("{}", serde_json::json!({"valid": ok, "message": message})),
        Format::Human if ok => println!("{message}"),
        Format::Human => eprintln!("{message}"),
    }
    if ok {
        exit::OK
    } else {
        exit::FAILED
    }
}
