//! aegis-engine: the bundle format, its loader and the evaluator that judges
//! agent tool calls, plus the DLP scanner and JWT verification.
//!
//! `no_std` + `alloc` so the same evaluator runs natively (`aegis eval`) and
//! inside the proxy-wasm filter. The `compile` feature (native only) adds the
//! builder that turns the IR into a bundle.
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod bundle;
pub mod dfa;
pub mod dlp;
pub mod eval;
pub mod gzip;
pub mod http;
mod index;
pub mod json;
pub mod jwt;
pub mod listing;
pub mod locator;
pub mod params;
pub mod reply;
pub mod trust;
pub mod types;

#[cfg(feature = "compile")]
pub mod builder;
#[cfg(feature = "compile")]
pub mod ir;
