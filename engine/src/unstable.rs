//! The engine's internals: the bundle's binary layout, the DFA loader, the
//! DLP scanner, gzip, the JSON reader and the parameter walk. Public only
//! so that the project's own tests and benches can reach them; no
//! stability promise. Everything a user of the engine needs is at the
//! crate root.

#[path = "bundle.rs"]
pub mod bundle;
#[path = "dfa.rs"]
pub mod dfa;
#[path = "dlp/mod.rs"]
pub mod dlp;
#[path = "gzip.rs"]
pub mod gzip;
#[path = "json.rs"]
pub mod json;
#[path = "params.rs"]
pub mod params;
