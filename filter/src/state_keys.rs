//! The filter-state keys a decision is written to (Envoy stores each as
//! `wasm.<key>`), and the bits of `filter_state` in the configuration that
//! pick them.

pub const DECISION: &str = "aegis_decision";
pub const REASON: &str = "aegis_reason";
pub const RULE: &str = "aegis_rule";
pub const AGENT: &str = "aegis_agent";
pub const TOOL: &str = "aegis_tool";
pub const ACTION: &str = "aegis_action";
pub const POLICY_VERSION: &str = "aegis_policy_version";
pub const REQUEST_ID: &str = "aegis_request_id";
pub const MODE: &str = "aegis_mode";
/// The approval a call waited for or redeemed.
pub const APPROVAL: &str = "aegis_approval";
/// Who decided that approval.
pub const APPROVER: &str = "aegis_approver";
/// What the call did to its agent's budget (`spent`, `exhausted`,
/// `unmetered`).
pub const BUDGET: &str = "aegis_budget";

/// Every key, in the order of the bits of `Config::filter_state`.
pub const ALL: [&str; 12] = [
    DECISION,
    REASON,
    RULE,
    AGENT,
    TOOL,
    ACTION,
    POLICY_VERSION,
    REQUEST_ID,
    MODE,
    APPROVAL,
    APPROVER,
    BUDGET,
];
/// The bits of every key.
pub const EVERY: u16 = (1 << ALL.len()) - 1;
