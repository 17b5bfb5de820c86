//! Small enums shared by the IR, the bundle and decisions.

use serde::{Deserialize, Serialize};

/// How a tool's request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyKind {
    Json,
    Form,
    None,
}

/// `enforce` blocks; `shadow` records the verdict and lets the call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Enforce,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// When a rule asks for human approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Approval {
    /// A failed condition denies.
    Never,
    /// A failed condition asks for approval instead of denying.
    OnFailure,
    /// Every call that passes its conditions needs approval.
    Always,
}

/// Built-in DLP detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Detector {
    Ssn,
    CreditCard,
    Email,
    Phone,
    Dob,
    Iban,
    AwsAccessKey,
    ApiKey,
    PrivateKey,
    Jwt,
}

impl Detector {
    pub const ALL: [Detector; 10] = [
        Detector::Ssn,
        Detector::CreditCard,
        Detector::Email,
        Detector::Phone,
        Detector::Dob,
        Detector::Iban,
        Detector::AwsAccessKey,
        Detector::ApiKey,
        Detector::PrivateKey,
        Detector::Jwt,
    ];

    /// The name used in policies, reasons and `[REDACTED:<name>]`.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Ssn => "ssn",
            Detector::CreditCard => "credit_card",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Dob => "dob",
            Detector::Iban => "iban",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::ApiKey => "api_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// What DLP does with a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DlpAction {
    /// Replace with `[REDACTED:<detector>]`.
    Redact,
    /// Keep the last four characters, star the rest.
    Mask,
    /// Replace with a keyed, deterministic token.
    Hash,
    /// Deny the request.
    Deny,
}

impl DlpAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DlpAction::Redact => "redact",
            DlpAction::Mask => "mask",
            DlpAction::Hash => "hash",
            DlpAction::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    Sanitize,
    ApprovalNeeded,
    /// The decision needs the request body; call again with it.
    NeedBody,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Sanitize => "sanitize",
            Verdict::ApprovalNeeded => "approval_needed",
            Verdict::NeedBody => "need_body",
        }
    }
}
