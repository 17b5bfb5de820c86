//! The bundle: the compiled policy, its binary format and its loader.
//!
//! Layout (little endian):
//!
//! ```text
//! magic      8  "AEGISBND"
//! format     2  FORMAT_VERSION
//! flags      2  FLAG_DEFLATE or 0
//! length     4  payload length
//! hash      32  sha256(revision + payload), the 8 + n bytes that follow
//! revision   8  u64, set by whoever builds the bundle
//! payload    n  postcard-encoded `Model`, or with FLAG_DEFLATE:
//!               inflated length (u32) + raw deflate of the `Model` bytes
//! [signature block, optional]
//! magic      8  "AEGISSIG"
//! key       32  Ed25519 public key of the signer
//! sig       64  Ed25519 signature over everything before the block
//! ```
//!
//! The hash and the signature cover the payload as stored, so a payload is
//! inflated only once it is known to be intact (and trusted, when keys are
//! configured). They cover the revision too: whoever takes a newer
//! revision over an older one (the control plane on publish, the filter on
//! reload) can trust that the number is the one the signer chose. `encode` compresses: a 1,000-agent bundle shrinks about
//! 7.5 times, which is what keeps the blob small. Inflating it costs about
//! a millisecond (native), once, at configure time.
//!
//! Loading validates every index the evaluator will follow, so evaluation
//! never has to trust the bytes.

use crate::dfa::{load_dense, Dfa};
use crate::dlp::{DlpSpec, Scanner};
use crate::index::{agent_hash, host_hash, Index};
use crate::jwt::{IdentityConfig, VerifyingKeys};
use crate::params::{ParamPaths, MAX_PARAMS};
use crate::types::{Approval, BodyKind, Mode};
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use ed25519_dalek::{Signature, VerifyingKey};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 8] = b"AEGISBND";
pub const SIG_MAGIC: &[u8; 8] = b"AEGISSIG";
pub const FORMAT_VERSION: u16 = 10;
/// Header flag: the payload is deflate-compressed.
pub const FLAG_DEFLATE: u16 = 1;
/// Largest `Model` encoding a bundle may inflate to.
pub const MAX_MODEL_BYTES: u32 = 256 << 20;
pub const HEADER_LEN: usize = 8 + 2 + 2 + 4 + 32 + 8;
/// Where the revision starts; the hash covers the bytes from here on.
pub const REVISION_AT: usize = 8 + 2 + 2 + 4 + 32;
pub const SIG_BLOCK_LEN: usize = 8 + 32 + 64;

/// Request limits carried in the bundle (the filter may lower them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest request body judged; larger bodies are denied.
    pub max_body_bytes: u32,
    /// Deepest JSON nesting read.
    pub max_json_depth: u32,
    /// Most values (JSON values, form pairs, query pairs) read from one
    /// request.
    pub max_params: u32,
}

impl Limits {
    /// Hard ceilings a policy may not raise the limits past.
    pub const MAX: Limits = Limits {
        max_body_bytes: 64 << 20,
        max_json_depth: crate::json::MAX_DEPTH_LIMIT as u32,
        max_params: 65_536,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_json_depth: 32,
            max_params: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub policy_version: String,
    pub compiler_version: String,
    pub identity: Option<IdentityConfig>,
    pub limits: Limits,
    pub tools: Vec<ToolEntry>,
    /// Sorted by host; values are tool indices.
    pub exact_hosts: Vec<(String, Vec<u16>)>,
    /// `(".suffix", tools)`, longest suffix first.
    pub wildcard_hosts: Vec<(String, Vec<u16>)>,
    /// Sorted by `(tenant, name)`, agents without a tenant first.
    pub agents: Vec<AgentEntry>,
    pub rules: Vec<RuleEntry>,
    pub preds: Vec<PredEntry>,
    /// Condition regex DFAs (serialized, unanchored).
    pub regexes: Vec<Vec<u8>>,
    pub dlp: Vec<DlpSpec>,
    /// The DLP set (of `dlp`) with every built-in detector, redacting,
    /// that masks the parameters a person deciding an approval is shown,
    /// whatever the agent's own DLP does; `None` when no rule asks for
    /// approval.
    pub approval_dlp: Option<u32>,
    /// What the policy said that evaluation does not need, kept so that
    /// the bundle explains itself as its policy does.
    pub source: Source,
}

/// The policy's own order and spelling where the evaluator's tables lose
/// them: read only by [`Bundle::explain`], never per request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Indices into [`Model::agents`], in policy order.
    pub agent_order: Vec<u32>,
    /// By agent of [`Model::agents`].
    pub agents: Vec<AgentSource>,
    /// By regex of [`Model::regexes`]: its pattern as written.
    pub regexes: Vec<String>,
    /// By DLP set of [`Model::dlp`]: its detectors as listed.
    pub dlp: Vec<DlpSource>,
}

/// One agent as its policy lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSource {
    /// `egress.allow_hosts` as listed (the table sorts them).
    pub allow_hosts: Option<Vec<String>>,
    /// Its rules, indices into [`Model::rules`], in policy order (the
    /// table groups them by tool and action).
    pub rules: Vec<u32>,
}

/// One DLP set as the policy lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DlpSource {
    pub detectors: Vec<crate::types::Detector>,
    /// `(name, regex)` of each custom detector.
    pub custom: Vec<(String, String)>,
}

/// One tool: an entry of [`Model::tools`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEntry {
    pub name: String,
    pub hosts: Vec<String>,
    pub body: BodyKind,
    /// MCP endpoint path; actions are `tools/call` names.
    pub mcp_path: Option<String>,
    pub actions: Vec<ActionEntry>,
    /// Reads `content-encoding: gzip` bodies.
    pub gzip: bool,
    /// MCP: `tools/list` answers are filtered per agent.
    pub filter_tools_list: bool,
    /// Parameter paths (segments) any rule of this tool looks at; the
    /// index is the slot.
    pub params: Vec<Vec<String>>,
    /// Anchored multi-pattern DFA over `METHOD path`; empty for MCP.
    #[serde(with = "crate::dfa::as_bytes")]
    pub routes: Vec<u8>,
    /// Route pattern id -> action index.
    pub route_actions: Vec<u16>,
}

/// One action of a tool: an entry of [`ToolEntry::actions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionEntry {
    pub name: String,
    pub method: String,
    pub template: Vec<TSeg>,
    pub write: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TSeg {
    Lit(String),
    /// Binds the segment to a parameter slot.
    Param(u16),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostList {
    /// Sorted, lowercase.
    pub exact: Vec<String>,
    /// `.suffix` for each `*.suffix`.
    pub suffixes: Vec<String>,
}

/// An agent's spending limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AgentBudget {
    pub daily_usd: Option<f64>,
    pub rps: Option<f64>,
}

/// One agent: an entry of [`Model::agents`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEntry {
    pub id: String,
    pub name: String,
    pub tenant: Option<String>,
    pub mode: Mode,
    pub allow_hosts: Option<HostList>,
    pub budget: Option<AgentBudget>,
    pub dlp: Option<u32>,
    /// Sorted by `(tool, action)`.
    pub table: Vec<TableEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub tool: u16,
    pub action: u16,
    pub rules: Span,
}

/// A range into one of the flat arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub fn range(self) -> core::ops::Range<usize> {
        let s = self.start as usize;
        s..s.saturating_add(self.len as usize)
    }
}

/// One rule: an entry of [`Model::rules`]; its predicates are spans of
/// [`Model::preds`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEntry {
    pub id: String,
    pub when: Span,
    pub conds: Span,
    pub approval: Approval,
    pub cost_usd: Option<f64>,
}

/// One predicate: an entry of [`Model::preds`], on a parameter slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredEntry {
    pub slot: u16,
    pub op: PredOp,
}

/// What a predicate checks; regexes are indices into [`Model::regexes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PredOp {
    Eq(Lit),
    Ne(Lit),
    In(Vec<Lit>),
    NotIn(Vec<Lit>),
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    Matches(u32),
    NotMatches(u32),
    Exists,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    TooShort,
    BadMagic,
    UnsupportedVersion(u16),
    UnsupportedFlags(u16),
    BadLength,
    HashMismatch,
    BadSignature,
    Unsigned,
    UntrustedSigner,
    Decode(String),
    Invalid(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::TooShort => f.write_str("bundle is truncated"),
            LoadError::BadMagic => f.write_str("not an aegis bundle (bad magic)"),
            LoadError::UnsupportedVersion(v) => write!(
                f,
                "bundle format version {v} is not supported (this build reads {FORMAT_VERSION})"
            ),
            LoadError::UnsupportedFlags(v) => {
                write!(f, "bundle header flags {v:#06x} are not supported")
            }
            LoadError::BadLength => f.write_str("bundle length does not match its header"),
            LoadError::HashMismatch => f.write_str("bundle content hash does not match"),
            LoadError::BadSignature => f.write_str("bundle signature is invalid"),
            LoadError::Unsigned => {
                f.write_str("bundle is not signed but trusted keys are configured")
            }
            LoadError::UntrustedSigner => {
                f.write_str("bundle is signed by a key that is not trusted")
            }
            LoadError::Decode(e) => write!(f, "bundle payload does not decode: {e}"),
            LoadError::Invalid(e) => write!(f, "bundle is inconsistent: {e}"),
        }
    }
}

/// The parts of a bundle file, checked for integrity (hash, and the
/// signature against the embedded key) but not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub format: u16,
    pub flags: u16,
    pub hash: [u8; 32],
    /// The revision its builder gave it; covered by the hash and the
    /// signature.
    pub revision: u64,
    pub payload: &'a [u8],
    /// Signer's public key when signed.
    pub signer: Option<[u8; 32]>,
    /// Bytes covered by the signature (header + payload).
    pub signed_part: &'a [u8],
}

fn arr<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], LoadError> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(LoadError::TooShort)
}

impl<'a> Envelope<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LoadError> {
        if bytes.len() < HEADER_LEN {
            return Err(LoadError::TooShort);
        }
        if arr::<8>(bytes, 0)? != *MAGIC {
            return Err(LoadError::BadMagic);
        }
        let format = u16::from_le_bytes(arr(bytes, 8)?);
        if format != FORMAT_VERSION {
            return Err(LoadError::UnsupportedVersion(format));
        }
        let flags = u16::from_le_bytes(arr(bytes, 10)?);
        if flags & !FLAG_DEFLATE != 0 {
            return Err(LoadError::UnsupportedFlags(flags));
        }
        let len = u32::from_le_bytes(arr(bytes, 12)?) as usize;
        let hash: [u8; 32] = arr(bytes, 16)?;
        let revision = u64::from_le_bytes(arr(bytes, REVISION_AT)?);
        let end = HEADER_LEN.checked_add(len).ok_or(LoadError::BadLength)?;
        let payload = bytes.get(HEADER_LEN..end).ok_or(LoadError::BadLength)?;
        let hashed = bytes.get(REVISION_AT..end).ok_or(LoadError::BadLength)?;
        if Sha256::digest(hashed).as_slice() != hash {
            return Err(LoadError::HashMismatch);
        }
        let signed_part = bytes.get(..end).ok_or(LoadError::BadLength)?;
        let rest = bytes.get(end..).unwrap_or_default();
        let signer = match rest.len() {
            0 => None,
            SIG_BLOCK_LEN => {
                if arr::<8>(rest, 0)? != *SIG_MAGIC {
                    return Err(LoadError::BadLength);
                }
                let key: [u8; 32] = arr(rest, 8)?;
                let sig: [u8; 64] = arr(rest, 40)?;
                let vk = VerifyingKey::from_bytes(&key).map_err(|_| LoadError::BadSignature)?;
                vk.verify_strict(signed_part, &Signature::from_bytes(&sig))
                    .map_err(|_| LoadError::BadSignature)?;
                Some(key)
            }
            _ => return Err(LoadError::BadLength),
        };
        Ok(Envelope {
            format,
            flags,
            hash,
            revision,
            payload,
            signer,
            signed_part,
        })
    }

    /// The `Model` encoding: the payload, inflated when it is compressed.
    pub fn model_bytes(&self) -> Result<Cow<'a, [u8]>, LoadError> {
        if self.flags & FLAG_DEFLATE == 0 {
            return Ok(Cow::Borrowed(self.payload));
        }
        let bad = |why: &str| LoadError::Decode(format!("compressed payload: {why}"));
        let (head, data) = match (self.payload.get(..4), self.payload.get(4..)) {
            (Some(h), Some(d)) => (h, d),
            _ => return Err(bad("no inflated length")),
        };
        let want = u32::from_le_bytes(arr(head, 0)?);
        // Deflate cannot expand more than 1032:1; a larger claim is a lie
        // that would only make us allocate.
        let most = (data.len() as u64).saturating_mul(1032).saturating_add(64);
        if want > MAX_MODEL_BYTES || u64::from(want) > most {
            return Err(bad(&format!(
                "claims {want} inflated bytes from {} compressed",
                data.len()
            )));
        }
        let mut out = Vec::new();
        out.try_reserve_exact(want as usize)
            .map_err(|_| bad(&format!("no memory for {want} bytes")))?;
        out.resize(want as usize, 0);
        let mut state = Box::<DecompressorOxide>::default();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        let (status, used, n) = decompress(&mut state, data, &mut out, 0, flags);
        match status {
            TINFLStatus::Done if n == out.len() && used == data.len() => Ok(Cow::Owned(out)),
            TINFLStatus::Done | TINFLStatus::HasMoreOutput => {
                Err(bad("inflated length does not match its header"))
            }
            _ => Err(bad("corrupt or truncated deflate data")),
        }
    }

    /// Requires a signature by one of `trusted` (when `trusted` is not empty).
    pub fn check_trust(&self, trusted: &[[u8; 32]]) -> Result<(), LoadError> {
        Ok(crate::trust::check_trust(self.signer.as_ref(), trusted)?)
    }
}

impl From<crate::trust::TrustError> for LoadError {
    fn from(e: crate::trust::TrustError) -> LoadError {
        match e {
            crate::trust::TrustError::Unsigned => LoadError::Unsigned,
            crate::trust::TrustError::UntrustedSigner => LoadError::UntrustedSigner,
        }
    }
}

/// A loaded, validated bundle, ready to evaluate.
pub struct Bundle {
    pub model: Model,
    pub hash: [u8; 32],
    pub signer: Option<[u8; 32]>,
    pub(crate) revision: u64,
    pub(crate) routes: Vec<Option<Dfa>>,
    pub(crate) regexes: Vec<Dfa>,
    pub(crate) scanners: Vec<Scanner>,
    pub(crate) keys: Option<VerifyingKeys>,
    /// `model.agents` by `(tenant, name)`.
    pub(crate) agent_index: Index,
    /// `model.exact_hosts` by host, without ASCII case.
    pub(crate) host_index: Index,
    /// Each tool's parameter paths, ready for the JSON walk.
    pub(crate) param_paths: Vec<ParamPaths>,
    /// Per agent, `(host_hash, index)` of its exact egress hosts, by hash.
    pub(crate) egress_hashes: Vec<Vec<(u64, u32)>>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("policy_version", &self.model.policy_version)
            .field("revision", &self.revision)
            .field("agents", &self.model.agents.len())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Loads and validates bundle bytes. With a non-empty `trusted` list the
    /// bundle must be signed by one of those keys. Never panics.
    pub fn load(bytes: &[u8], trusted: &[[u8; 32]]) -> Result<Bundle, LoadError> {
        let env = Envelope::parse(bytes)?;
        env.check_trust(trusted)?;
        let model: Model = postcard::from_bytes(&env.model_bytes()?)
            .map_err(|e| LoadError::Decode(format!("{e}")))?;
        validate(&model).map_err(LoadError::Invalid)?;
        let mut routes = Vec::with_capacity(model.tools.len());
        let mut param_paths = Vec::with_capacity(model.tools.len());
        for (i, t) in model.tools.iter().enumerate() {
            param_paths.push(ParamPaths::new(&t.params).ok_or_else(|| {
                LoadError::Invalid(format!("tool {i}: more than {MAX_PARAMS} parameters"))
            })?);
            if t.mcp_path.is_some() {
                routes.push(None);
            } else {
                let dfa = load_dense(&t.routes)
                    .map_err(|e| LoadError::Invalid(format!("tool {i} routes: {e}")))?;
                routes.push(Some(dfa));
            }
        }
        let mut regexes = Vec::with_capacity(model.regexes.len());
        for (i, r) in model.regexes.iter().enumerate() {
            regexes.push(load_dense(r).map_err(|e| LoadError::Invalid(format!("regex {i}: {e}")))?);
        }
        let mut scanners = Vec::with_capacity(model.dlp.len());
        for (i, d) in model.dlp.iter().enumerate() {
            scanners.push(
                Scanner::load(d).map_err(|e| LoadError::Invalid(format!("dlp set {i}: {e}")))?,
            );
        }
        let keys = match &model.identity {
            Some(id) => Some(
                VerifyingKeys::new(id)
                    .map_err(|e| LoadError::Invalid(format!("identity keys: {e}")))?,
            ),
            None => None,
        };
        let too_many = || LoadError::Invalid("too many agents or hosts to index".into());
        let agent_index = Index::build(model.agents.len(), |i| {
            model.agents.get(i).map_or(0, |a| {
                let (tenant, name) = agent_key(a);
                agent_hash(tenant, name)
            })
        })
        .ok_or_else(too_many)?;
        let host_index = Index::build(model.exact_hosts.len(), |i| {
            model.exact_hosts.get(i).map_or(0, |(h, _)| host_hash(h))
        })
        .ok_or_else(too_many)?;
        let mut egress_hashes = Vec::with_capacity(model.agents.len());
        for a in &model.agents {
            let exact = a
                .allow_hosts
                .as_ref()
                .map_or(&[][..], |l| l.exact.as_slice());
            let mut v = Vec::with_capacity(exact.len());
            for (i, h) in exact.iter().enumerate() {
                v.push((host_hash(h), u32::try_from(i).map_err(|_| too_many())?));
            }
            v.sort_unstable();
            egress_hashes.push(v);
        }
        Ok(Bundle {
            hash: env.hash,
            signer: env.signer,
            revision: env.revision,
            model,
            routes,
            regexes,
            scanners,
            keys,
            agent_index,
            host_index,
            param_paths,
            egress_hashes,
        })
    }

    pub fn policy_version(&self) -> &str {
        &self.model.policy_version
    }

    /// The revision its builder gave it (signed with the bundle when it is
    /// signed). A newer bundle of the same policy source has a greater one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Hex of the content hash.
    pub fn hash_hex(&self) -> String {
        crate::trust::hex(&self.hash)
    }

    /// The `budget:` block of the agent `name` of `tenant` (`None` for an
    /// agent without a tenant), found the way a decision finds the caller;
    /// `None` when there is no such agent or it has no budget.
    pub fn budget(&self, tenant: Option<&str>, name: &str) -> Option<AgentBudget> {
        self.find_agent(tenant, name).and_then(|(_, a)| a.budget)
    }

    /// Detector names of a DLP set, by slot.
    pub fn dlp_names(&self, set: u32) -> impl Iterator<Item = &str> {
        self.scanners
            .get(set as usize)
            .into_iter()
            .flat_map(|s| s.pattern_names())
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn span_ok(s: Span, len: usize) -> bool {
    (s.start as usize)
        .checked_add(s.len as usize)
        .is_some_and(|end| end <= len)
}

/// Checks every cross reference the evaluator follows.
fn validate(m: &Model) -> Result<(), String> {
    check(m.tools.len() <= usize::from(u16::MAX), || {
        "too many tools".into()
    })?;
    let (l, max) = (m.limits, Limits::MAX);
    check(
        (1..=max.max_body_bytes).contains(&l.max_body_bytes)
            && (1..=max.max_json_depth).contains(&l.max_json_depth)
            && (1..=max.max_params).contains(&l.max_params),
        || "limits out of range".into(),
    )?;
    for (i, t) in m.tools.iter().enumerate() {
        check(t.params.len() <= MAX_PARAMS, || {
            format!("tool {i} has too many params")
        })?;
        check(t.actions.len() <= usize::from(u16::MAX), || {
            format!("tool {i}: too many actions")
        })?;
        for a in &t.actions {
            for s in &a.template {
                if let TSeg::Param(p) = s {
                    check(usize::from(*p) < t.params.len(), || {
                        format!("tool {i}: template slot out of range")
                    })?;
                }
            }
        }
        for a in &t.route_actions {
            check(usize::from(*a) < t.actions.len(), || {
                format!("tool {i}: route action out of range")
            })?;
        }
    }
    for (_, tools) in m.exact_hosts.iter().chain(m.wildcard_hosts.iter()) {
        for t in tools {
            check(usize::from(*t) < m.tools.len(), || {
                "host tool out of range".into()
            })?;
        }
    }
    check(
        m.exact_hosts
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.0 < b.0)),
        || "hosts not sorted".into(),
    )?;
    check(
        m.agents
            .windows(2)
            .all(|w| matches!(w, [a, b] if agent_key(a) < agent_key(b))),
        || "agents not sorted".into(),
    )?;
    check(
        m.approval_dlp.is_none_or(|d| (d as usize) < m.dlp.len()),
        || "approval dlp out of range".into(),
    )?;
    validate_source(m)?;
    for (i, a) in m.agents.iter().enumerate() {
        if let Some(d) = a.dlp {
            check((d as usize) < m.dlp.len(), || {
                format!("agent {i}: dlp out of range")
            })?;
        }
        check(
            a.table
                .windows(2)
                .all(|w| matches!(w, [x, y] if (x.tool, x.action) < (y.tool, y.action))),
            || format!("agent {i}: table not sorted"),
        )?;
        for e in &a.table {
            let tool = m
                .tools
                .get(usize::from(e.tool))
                .ok_or_else(|| format!("agent {i}: tool out of range"))?;
            check(usize::from(e.action) < tool.actions.len(), || {
                format!("agent {i}: action out of range")
            })?;
            check(span_ok(e.rules, m.rules.len()), || {
                format!("agent {i}: rules out of range")
            })?;
            for r in m.rules.get(e.rules.range()).unwrap_or_default() {
                for s in [r.when, r.conds] {
                    check(span_ok(s, m.preds.len()), || {
                        "predicates out of range".into()
                    })?;
                    for p in m.preds.get(s.range()).unwrap_or_default() {
                        check(usize::from(p.slot) < tool.params.len(), || {
                            format!("rule `{}`: slot out of range", r.id)
                        })?;
                        if let PredOp::Matches(x) | PredOp::NotMatches(x) = p.op {
                            check((x as usize) < m.regexes.len(), || {
                                format!("rule `{}`: regex out of range", r.id)
                            })?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The source's parallel lists match the model's and point inside it.
fn validate_source(m: &Model) -> Result<(), String> {
    let s = &m.source;
    check(
        s.agents.len() == m.agents.len()
            && s.agent_order.len() == m.agents.len()
            && s.regexes.len() == m.regexes.len()
            && s.dlp.len() == m.dlp.len(),
        || "source lists do not match the model".into(),
    )?;
    check(
        s.agent_order.iter().all(|i| (*i as usize) < m.agents.len()),
        || "source agent out of range".into(),
    )?;
    check(
        s.agents
            .iter()
            .flat_map(|a| &a.rules)
            .all(|r| (*r as usize) < m.rules.len()),
        || "source rule out of range".into(),
    )
}

/// Sort key of agents. `Option` rather than `""` for "no tenant": equal
/// empty strings would still go through `memcmp`, which is needlessly slow
/// on some libc builds.
pub(crate) fn agent_key(a: &AgentEntry) -> (Option<&str>, &str) {
    (a.tenant.as_deref(), a.name.as_str())
}

/// Why a model does not encode into bundle bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The model does not serialize.
    Serialize(String),
    /// The payload is over [`MAX_MODEL_BYTES`] or its length field.
    TooLarge,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Serialize(e) => write!(f, "encode bundle: {e}"),
            EncodeError::TooLarge => f.write_str("bundle too large"),
        }
    }
}

/// Serializes a model into bundle bytes, compressed, optionally signed.
#[cfg(feature = "compile")]
pub fn encode(
    model: &Model,
    revision: u64,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<Vec<u8>, EncodeError> {
    encode_with(model, revision, key, true)
}

/// [`encode`], with the payload compressed or stored as it is.
#[cfg(feature = "compile")]
pub fn encode_with(
    model: &Model,
    revision: u64,
    key: Option<&ed25519_dalek::SigningKey>,
    compress: bool,
) -> Result<Vec<u8>, EncodeError> {
    use ed25519_dalek::Signer;
    let raw = postcard::to_allocvec(model).map_err(|e| EncodeError::Serialize(format!("{e}")))?;
    let raw_len = u32::try_from(raw.len())
        .ok()
        .filter(|n| *n <= MAX_MODEL_BYTES)
        .ok_or(EncodeError::TooLarge)?;
    let (flags, payload) = if compress {
        let mut p = raw_len.to_le_bytes().to_vec();
        // Level 9 would cost 35 ms more on a 1,000-agent policy (about
        // 15% of `aegis build`) to save 1% of the size.
        p.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(&raw, 6));
        (FLAG_DEFLATE, p)
    } else {
        (0, raw)
    };
    let len = u32::try_from(payload.len()).map_err(|_| EncodeError::TooLarge)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIG_BLOCK_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    let revision = revision.to_le_bytes();
    let hash = Sha256::new()
        .chain_update(revision)
        .chain_update(&payload)
        .finalize();
    out.extend_from_slice(&hash);
    out.extend_from_slice(&revision);
    out.extend_from_slice(&payload);
    if let Some(k) = key {
        let sig = k.sign(&out);
        out.extend_from_slice(SIG_MAGIC);
        out.extend_from_slice(k.verifying_key().as_bytes());
        out.extend_from_slice(&sig.to_bytes());
    }
    Ok(out)
}
