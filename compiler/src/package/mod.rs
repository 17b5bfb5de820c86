//! Packaging for Envoy: the blob (the generic filter module with a
//! compiled bundle embedded, [`blob`]) and the WebAssembly module signature
//! over it ([`wasmsig`]); the module as an OCI image for Istio ([`oci`])
//! and its push to a registry ([`registry`]). `aegis build` and `aegis verify` go through here,
//! and so does whatever takes a bundle from either kind of file
//! ([`bundle_from_file`]).

pub mod blob;
pub mod oci;
pub mod registry;
pub mod wasmsig;

use aegis_engine::BUNDLE_MAGIC;
use std::borrow::Cow;

/// Why [`bundle_from_file`] found no bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleFileError {
    #[error(
        "neither a bundle nor a filter module (it starts with neither `AEGISBND` nor `\\0asm`)"
    )]
    Unknown,
    #[error("the filter module carries no bundle (a generic filter); pass a bundle or a module from `aegis build`")]
    NoBundle,
    #[error("the filter module: {0}")]
    Blob(#[from] blob::BlobError),
    #[error("the bundle embedded in the filter module does not start with `AEGISBND`")]
    NotABundle,
}

/// The bundle in a file: the file itself when it is a bundle (`aegis
/// compile`), or the bundle embedded in a filter module (`aegis build`),
/// found through the module's locator as the filter finds it. Nothing is
/// verified here: the bytes go to whoever checks their signature.
pub fn bundle_from_file(bytes: &[u8]) -> Result<Cow<'_, [u8]>, BundleFileError> {
    if bytes.starts_with(BUNDLE_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(BundleFileError::Unknown);
    }
    let bundle = blob::extract(bytes)?.ok_or(BundleFileError::NoBundle)?;
    if !bundle.starts_with(BUNDLE_MAGIC) {
        return Err(BundleFileError::NotABundle);
    }
    Ok(Cow::Owned(bundle))
}
