//! The intermediate representation: a validated, resolved policy set.
//!
//! The compiler front-end turns YAML into this; the builder turns this into a
//! bundle. Names are already checked (every rule points at a real tool and
//! action), rules are expanded one per action and carry their stable ids.
//! Tests interpret the IR directly to check the compiled bundle against it.

use alloc::string::String;
use alloc::vec::Vec;

pub use crate::types::{Approval, BodyKind, Detector, DlpAction, Mode};

use crate::jwt::IdentityConfig;

/// Everything one compile produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Policy version reported in every decision (user given, or derived from
    /// the content hash of the sources).
    pub version: String,
    /// How agents authenticate; `None` means only directly given identities
    /// (test cases) are accepted and every proxied request is denied.
    pub identity: Option<IdentityConfig>,
    pub tools: Vec<Tool>,
    pub agents: Vec<Agent>,
    /// Request limits (`kind: Limits`), defaults when not given.
    pub limits: crate::bundle::Limits,
}

/// A tool from a `kind: ToolCatalog` document.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    /// Lowercase host names, exact (`api.stripe.com`) or wildcard (`*.acme.internal`).
    pub hosts: Vec<String>,
    pub body: BodyKind,
    /// `Some(path)` for an MCP server: actions are JSON-RPC `tools/call`
    /// `params.name` values, sent as POST to this path.
    pub mcp_path: Option<String>,
    pub actions: Vec<Action>,
    /// Accepts `content-encoding: gzip` bodies (`encodings: [gzip]`).
    pub gzip: bool,
    /// MCP: the server's `tools/list` answers show each agent only the
    /// tools it may call (`mcp: {filter_tools_list: false}` turns it off).
    pub filter_tools_list: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    /// Uppercase HTTP method; `None` for MCP actions.
    pub method: Option<String>,
    /// Path template such as `/v1/customers/{id}`; `None` for MCP actions.
    pub path: Option<String>,
    /// Marked as a write (changes the fail policy of callouts later on).
    pub write: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// `tenant/agent` when a tenant is set, else `agent`.
    pub id: String,
    pub name: String,
    pub tenant: Option<String>,
    pub mode: Mode,
    /// `None`: no egress restriction (the compiler warns).
    pub allow_hosts: Option<Vec<String>>,
    pub budget: Option<Budget>,
    pub dlp: Option<Dlp>,
    /// In policy order; for one (tool, action) the first rule whose `when`
    /// holds applies.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub daily_usd: Option<f64>,
    pub rps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Stable id, e.g. `finance-agent/stripe-payments/create_payment#0`.
    pub id: String,
    /// Index into `Policy::tools`.
    pub tool: usize,
    /// Index into that tool's `actions`.
    pub action: usize,
    /// Selects whether this rule applies at all.
    pub when: Vec<Predicate>,
    /// Must all hold for the call to be allowed.
    pub conditions: Vec<Predicate>,
    pub approval: Approval,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// Dotted parameter path (`amount`, `card.last4`, `metadata.order_id`,
    /// `items.0.sku`).
    pub param: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Scalar),
    Ne(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    /// Regex source; matched against the whole decoded value only where
    /// the pattern anchors say so (standard search semantics).
    Matches(String),
    NotMatches(String),
    Exists,
    Absent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dlp {
    pub detectors: Vec<Detector>,
    /// `(name, regex)` pairs.
    pub custom: Vec<(String, String)>,
    pub action: DlpAction,
}
