//! What every stream of a configured plugin shares: the loaded bundle, the
//! limits, the DLP scratch space and the metric ids.
//!
//! Built once in `on_configure` and handed to streams through an `Rc`: a
//! proxy-wasm VM runs on one thread and never re-enters the module, so
//! `Rc` and `RefCell` are enough (and `try_borrow_mut` keeps even a broken
//! assumption from trapping).

use crate::config::{Config, ControlPlane};
use crate::metrics::Metrics;
use crate::reply::RequestIds;
use aegis_engine::jwt::TokenCacheConfig;
use aegis_engine::{trust, Bundle, LoadError, Scratch};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

/// Where the bundle in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Embedded,
    Configuration,
    /// Fetched from the control plane after the start (hot reload).
    ControlPlane,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Embedded => "embedded",
            Source::Configuration => "configuration",
            Source::ControlPlane => "control-plane",
        }
    }
}

pub struct Shared {
    pub bundle: Rc<Bundle>,
    pub source: Source,
    pub max_body_bytes: usize,
    pub hold_headers: bool,
    /// Read the tool host from the route (base-URL mode).
    pub tool_host_from_route: bool,
    /// Filter-state keys to write: bit `i` for `keys::ALL[i]`.
    pub filter_state: u16,
    /// Agents whose requests DLP may rewrite.
    dlp_agents: BTreeSet<String>,
    scratch: RefCell<Scratch>,
    pub metrics: Rc<RefCell<Metrics>>,
    pub ids: Rc<RequestIds>,
    /// The control plane for budgets and approvals; `None`: no calls out.
    pub control: Option<ControlPlane>,
    /// Enforce `budget.rps`.
    pub rate_limits: bool,
    /// Keys a bundle must be signed by (empty: any, or none).
    pub trusted_keys: Vec<[u8; 32]>,
    /// The platform's `max_body_bytes`, before the policy's own limit.
    platform_max_body: usize,
    token_cache: TokenCacheConfig,
    /// A control plane, and an agent with `budget.daily_usd`.
    metered: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("bundle", &self.bundle)
            .field("source", &self.source)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("hold_headers", &self.hold_headers)
            .finish_non_exhaustive()
    }
}

/// Who signed a bundle, for the log, with the key id `aegis` prints.
pub fn signer_text(signer: Option<&[u8; 32]>) -> String {
    match signer {
        Some(k) => format!("signed by key {}", trust::key_fingerprint(k)),
        None => "unsigned".into(),
    }
}

impl Shared {
    /// Parses the plugin configuration and picks the bundle: the one in the
    /// configuration, else the embedded one (already integrity-checked when
    /// the VM started), and checks it against the trusted keys. The error is
    /// one line for the log.
    pub fn configure(
        config_bytes: &[u8],
        embedded: Option<&Rc<Bundle>>,
        metrics: Rc<RefCell<Metrics>>,
        ids: Rc<RequestIds>,
    ) -> Result<Shared, String> {
        let config = Config::parse(config_bytes)
            .map_err(|e| format!("invalid plugin configuration: {e}"))?;
        let (bundle, source) = match (&config.bundle, embedded) {
            (Some(bytes), _) => {
                let b = Bundle::load(bytes, &config.trusted_keys)
                    .map_err(|e| format!("cannot load the bundle from the configuration: {e}"))?;
                (Rc::new(b), Source::Configuration)
            }
            (None, Some(b)) => {
                // The loader's rule, for a bundle loaded when the VM started.
                trust::check_trust(b.signer.as_ref(), &config.trusted_keys).map_err(|e| {
                    format!("cannot use the embedded bundle: {}", LoadError::from(e))
                })?;
                (Rc::clone(b), Source::Embedded)
            }
            (None, None) => {
                return Err(
                    "no policy bundle: this filter has none embedded (build one with `aegis \
                     build`) and the configuration has no `bundle`"
                        .into(),
                )
            }
        };
        Ok(Shared::build(
            bundle,
            source,
            &config,
            config.control_plane.clone(),
            metrics,
            ids,
        ))
    }

    fn build(
        bundle: Rc<Bundle>,
        source: Source,
        config: &Config,
        control: Option<ControlPlane>,
        metrics: Rc<RefCell<Metrics>>,
        ids: Rc<RequestIds>,
    ) -> Shared {
        let dlp_agents = bundle
            .model
            .agents
            .iter()
            .filter(|a| a.dlp.is_some())
            .map(|a| a.id.clone())
            .collect();
        // The policy's limit and the platform's: the smaller one holds.
        let limits = bundle.model.limits;
        let max_body_bytes = config.max_body_bytes.min(limits.max_body_bytes as usize);
        let metered = control.is_some()
            && bundle
                .model
                .agents
                .iter()
                .any(|a| a.budget.is_some_and(|b| b.daily_usd.is_some()));
        Shared {
            scratch: RefCell::new(Scratch::for_bundle_with(&bundle, config.token_cache)),
            bundle,
            source,
            max_body_bytes,
            hold_headers: config.hold_headers,
            tool_host_from_route: config.tool_host_from_route,
            filter_state: config.filter_state,
            dlp_agents,
            metrics,
            ids,
            control,
            rate_limits: config.rate_limits,
            trusted_keys: config.trusted_keys.clone(),
            platform_max_body: config.max_body_bytes,
            token_cache: config.token_cache,
            metered,
        }
    }

    /// The same configuration with a newer bundle from the control plane
    /// (already checked against the trusted keys).
    pub fn with_bundle(&self, bundle: Bundle) -> Shared {
        let config = Config {
            trusted_keys: self.trusted_keys.clone(),
            bundle: None,
            max_body_bytes: self.platform_max_body,
            hold_headers: self.hold_headers,
            filter_state: self.filter_state,
            tool_host_from_route: self.tool_host_from_route,
            token_cache: self.token_cache,
            control_plane: None,
            rate_limits: self.rate_limits,
        };
        Shared::build(
            Rc::new(bundle),
            Source::ControlPlane,
            &config,
            self.control.clone(),
            Rc::clone(&self.metrics),
            Rc::clone(&self.ids),
        )
    }

    /// Whether budgets are metered here: a control plane, and an agent
    /// with `budget.daily_usd`.
    pub fn has_budgets(&self) -> bool {
        self.metered
    }

    /// Whether a decision for `agent` may rewrite the body. Unknown agent:
    /// assume it may.
    pub fn may_rewrite(&self, agent: Option<&str>) -> bool {
        agent.is_none_or(|a| self.dlp_agents.contains(a))
    }

    /// Runs `f` with the shared DLP scratch space (a fresh one should it be
    /// in use, which a single-threaded VM never sees).
    pub fn with_scratch<R>(&self, f: impl FnOnce(&mut Scratch) -> R) -> R {
        match self.scratch.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut Scratch::for_bundle_with(
                &self.bundle,
                TokenCacheConfig::OFF,
            )),
        }
    }

    /// One line describing what is in force, for the log.
    pub fn summary(&self) -> String {
        let b = &self.bundle;
        format!(
            "policy `{}` ({} agents, revision {}, hash {}, {} bundle, {}), max_body_bytes {}, {}{}{}",
            b.policy_version(),
            b.model.agents.len(),
            b.revision(),
            b.hash_hex(),
            self.source.as_str(),
            signer_text(b.signer.as_ref()),
            self.max_body_bytes,
            if self.hold_headers {
                "headers held while the body is judged"
            } else {
                "headers forwarded before the body is judged"
            },
            if self.tool_host_from_route {
                ", tool host read from the route"
            } else {
                ""
            },
            match self.scratch.try_borrow().map(|s| s.tokens.capacity()) {
                Ok(0) | Err(_) => String::new(),
                Ok(n) => format!(", verified-token cache of {n} tokens"),
            },
        ) + &match &self.control {
            Some(cp) => format!(
                ", control plane on cluster `{}` (timeout {} ms, approvals held {} ms, on \
                 failure reads {} and writes {})",
                cp.cluster,
                cp.timeout_ms,
                cp.approval_hold_ms,
                cp.on_failure.reads.as_str(),
                cp.on_failure.writes.as_str()
            ),
            None => String::new(),
        } + if self.rate_limits {
            ", budget.rps enforced"
        } else {
            ""
        }
    }
}
