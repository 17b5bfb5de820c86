//! `aegis package filter.wasm [-o DIR] [--tag T] [--pubkey PREFIX.pub]
//! [--push REF [--plain-http] [--authfile FILE]]`: the filter module from
//! `aegis build` as an OCI image Istio's `WasmPlugin` pulls (the compat
//! variant, [`crate::package::oci`]), written as an OCI image layout and
//! pushed when asked. Prints the manifest digest: the `sha256` a
//! `WasmPlugin` pins.

use super::{Error, Format};
use crate::package::oci::Image;
use crate::package::registry::{self, PushOptions, Reference};
use crate::package::{blob, wasmsig};
use aegis_engine::Bundle;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A filter module from `aegis build` (signed, with its bundle).
    file: PathBuf,
    /// The OCI image layout to write (default: FILE with `.oci` for `.wasm`).
    #[arg(short = 'o', long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The tag the layout's index gives the image.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Check both signatures against this key before packaging.
    #[arg(long, value_name = "PREFIX.pub")]
    pubkey: Option<PathBuf>,
    /// Push to `registry/repository[:tag]` (by digest only with no tag).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// Talk to the registry over plain HTTP (a registry on loopback).
    #[arg(long, requires = "push")]
    plain_http: bool,
    /// Registry credentials, as `docker login` or `skopeo login` write them
    /// (default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// $DOCKER_CONFIG/config.json, ~/.docker/config.json).
    #[arg(long, value_name = "FILE", requires = "push")]
    authfile: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

pub fn run(args: &Args) -> Result<ExitCode, Error> {
    let file = &args.file;
    let shown = file.display();
    let module = std::fs::read(file)
        .map_err(|e| Error::input(format_args!("cannot read `{shown}`: {e}")))?;
    if !module.starts_with(b"\0asm") {
        return Err(Error::input(format_args!(
            "`{shown}` is not a WebAssembly module; package the output of `aegis build`"
        )));
    }
    let reference = args
        .push
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(Error::input)?;
    // Only a policy blob goes out: a signed module with its bundle. The
    // filter checks the bundle's signer itself; a registry is no place
    // for a module nobody can vouch for.
    if wasmsig::signatures(&module)
        .map_err(|e| Error::failed(format_args!("`{shown}`: {e}")))?
        .is_none()
    {
        return Err(Error::failed(format_args!(
            "`{shown}` carries no module signature; build it with `aegis build --key`"
        )));
    }
    let embedded = blob::extract(&module)
        .map_err(|e| Error::failed(format_args!("`{shown}`: {e}")))?
        .ok_or_else(|| {
            Error::failed(format_args!(
                "`{shown}` carries no bundle (a generic filter); package the output of `aegis build`"
            ))
        })?;
    let bundle = Bundle::load(&embedded, &[]).map_err(|e| {
        Error::failed(format_args!(
            "`{shown}`: the embedded bundle does not load: {e}"
        ))
    })?;
    if let Some(pubkey) = &args.pubkey {
        let vk = crate::keys::read_verifying_key(pubkey).map_err(Error::input)?;
        super::verify::verify_blob(&module, &vk)
            .map_err(|e| Error::failed(format_args!("`{shown}`: {e}")))?;
    }
    let annotations = [
        (
            "dev.aegis.policy.version",
            bundle.model.policy_version.to_string(),
        ),
        ("dev.aegis.policy.revision", bundle.revision().to_string()),
        ("dev.aegis.policy.hash", bundle.hash_hex()),
    ];
    let image = Image::new(&module, &annotations).map_err(Error::input)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| file.with_extension("oci"));
    image.write_layout(&out, &args.tag).map_err(Error::input)?;
    let pushed = match &reference {
        Some(reference) => {
            let opts = PushOptions {
                plain_http: args.plain_http,
                auth_file: args.authfile.clone(),
            };
            Some(registry::push(&image, reference, &opts).map_err(Error::failed)?)
        }
        None => None,
    };
    let digest = &image.manifest.digest;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "layout": out.display().to_string(),
                "digest": digest,
                "sha256": image.sha256_hex(),
                "module_bytes": module.len(),
                "layer": image.layer.digest,
                "policy_version": bundle.model.policy_version.to_string(),
                "revision": bundle.revision(),
                "pushed": pushed.as_ref().map(|p| p.pinned.as_str()),
            })
        ),
        Format::Human => {
            println!(
                "wrote OCI image layout `{}` (tag `{}`): {} byte module as `plugin.wasm`, policy {} revision {}",
                out.display(),
                args.tag,
                module.len(),
                bundle.model.policy_version,
                bundle.revision()
            );
            println!("manifest digest {digest}");
            match &pushed {
                Some(p) => {
                    let reference = reference.as_ref().map(ToString::to_string);
                    println!(
                        "pushed {} as {} ({} blobs sent, {} already there)",
                        reference.unwrap_or_default(),
                        p.pinned,
                        p.uploaded,
                        p.present
                    );
                    println!("WasmPlugin: url: oci://{}", p.pinned);
                }
                None => println!("WasmPlugin: url: oci://REGISTRY/REPOSITORY@{digest}"),
            }
            println!("            sha256: {}", image.sha256_hex());
        }
    }
    Ok(ExitCode::SUCCESS)
}
