//! A bundle described for people: what `aegis explain` says about the
//! policies a bundle carries.

use crate::Bundle;
use std::format;
use std::string::String;

impl Bundle {
    /// The bundle's policy version and revision, one per line.
    pub fn explain(&self) -> String {
        format!(
            "policy version {}\nrevision {}\n",
            self.policy_version(),
            self.revision()
        )
    }
}
