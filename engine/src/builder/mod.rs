//! The builder: IR -> bundle. Native only (feature `compile`).

pub mod bundle;
pub mod dlp;
pub mod regex;
