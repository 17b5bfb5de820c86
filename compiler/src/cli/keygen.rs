//! `aegis keygen --out PREFIX`

use super::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let (key, public) = crate::keys::keygen(&args.out).map_err(Error::input)?;
    println!("wrote {} (secret, mode 0600)", key.display());
    println!("wrote {}", public.display());
    Ok(ExitCode::SUCCESS)
}
