//! YAML front-end
pub mod yaml;
