//! The builder: IR -> bundle. Native only (feature `compile`).

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use crate::bundle::EncodeError;

pub mod bundle;
pub mod dlp;
pub mod regex;

/// Why a policy does not compile into a bundle. Display gives a lowercase
/// sentence for a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// `pattern` would compile to a DFA over its size limit.
    RegexTooLarge { pattern: String, detail: String },
    /// `pattern` does not parse, or cannot be searched by a DFA.
    InvalidRegex { pattern: String, detail: String },
    /// A DLP detector set that cannot be built (bad custom detector, too
    /// many detectors, DFAs over the limit).
    Dlp(String),
    /// The DLP set of one agent.
    AgentDlp {
        agent: String,
        error: Box<BuildError>,
    },
    /// The IR is inconsistent, or does not fit the bundle format.
    Invalid(String),
    /// The model does not encode into a bundle.
    Encode(EncodeError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::RegexTooLarge { pattern, detail } => write!(
                f,
                "regex `{pattern}` would compile to a DFA larger than the limit: {detail}"
            ),
            BuildError::InvalidRegex { pattern, detail } => {
                write!(f, "invalid regex `{pattern}`: {detail}")
            }
            BuildError::Dlp(e) | BuildError::Invalid(e) => f.write_str(e),
            BuildError::AgentDlp { agent, error } => write!(f, "agent `{agent}` dlp: {error}"),
            BuildError::Encode(e) => write!(f, "{e}"),
        }
    }
}

impl From<EncodeError> for BuildError {
    fn from(e: EncodeError) -> Self {
        BuildError::Encode(e)
    }
}
