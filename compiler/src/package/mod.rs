//! Packaging for Envoy: the blob (the generic filter module with a
//! compiled bundle embedded, [`blob`]) and the WebAssembly module signature
//! over it ([`wasmsig`]). `aegis build` and `aegis verify` go through here.

pub mod blob;
pub mod wasmsig;
