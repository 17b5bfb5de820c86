//! `aegis keygen --out PREFIX`

use super::exit;
use std::path::Path;

pub fn run(prefix: &Path) -> i32 {
    match crate::keys::keygen(prefix) {
        Ok((key, public)) => {
            println!("wrote {} (secret, mode 0600)", key.display());
            println!("wrote {}", public.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}
