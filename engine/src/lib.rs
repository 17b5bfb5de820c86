//! aegis-engine: the bundle format, its loader and the evaluator that judges
//! agent tool calls, plus the DLP scanner and JWT verification.
//!
//! `no_std` + `alloc` so the same evaluator runs natively (`aegis eval`) and
//! inside the proxy-wasm filter. The `compile` feature (native only) adds the
//! builder that turns the IR into a bundle.
//!
//! What users of the engine need is at the crate root: load a [`Bundle`],
//! give it a [`Request`] and a [`Caller`] with a [`Scratch`] made once, and
//! read the [`Decision`]. Beside it, the contracts other crates share:
//! [`jwt`] (agent tokens), [`digest`] (which call an approval is for;
//! [`ApprovalSummary`] is what the person deciding it sees of the call),
//! [`reply`] (how a refusal is worded and shaped), with `std` [`explain`]
//! (the decision table for people),
//! [`locator`] (where a blob holds its bundle), [`trust`] (which signers are
//! accepted), and with `compile` the [`ir`] and its [`builder`].
//! [`unstable`] is for the project's own tests and benches.
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod eval;
mod http;
mod index;
mod listing;
mod mcp;
mod reason;
mod summary;
mod types;

pub mod day;
pub mod digest;
#[cfg(feature = "std")]
pub mod explain;
pub mod jwt;
pub mod locator;
pub mod reply;
pub mod trust;
#[doc(hidden)]
pub mod unstable;

#[cfg(feature = "compile")]
pub mod builder;
#[cfg(feature = "compile")]
pub mod ir;

// The internals live under `unstable`; the crate itself names them from
// the root.
use unstable::{bundle, dfa, dlp, gzip, json, params};

pub use bundle::{AgentBudget, Bundle, Envelope, Limits, LoadError, MAGIC as BUNDLE_MAGIC};
pub use eval::{AgentRef, Caller, Decision, Routed, Scratch};
pub use http::{Headers, HttpError, Request};
pub use listing::{Listing, ToolsList};
pub use mcp::{MCP_GOVERNED, MCP_PLUMBING};
pub use reason::Reason;
pub use summary::ApprovalSummary;
pub use types::{Approval, BodyKind, Detector, DlpAction, Mode, Verdict};
