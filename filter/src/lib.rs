//! aegis-filter: the Aegis policy gate as a proxy-wasm HTTP filter.
//!
//! A thin adapter around `aegis-engine`: the root context parses the plugin
//! configuration and loads the policy bundle (embedded by `aegis build`, or
//! given in the configuration) once; every HTTP stream hands its request to
//! the engine and applies the verdict. All judging is the engine's.
//!
//! - `adapter`: proxy-wasm contexts and the hostcalls (the only user of
//!   `proxy_wasm`)
//! - `stream`: one request, from headers to verdict, against the `Host`
//!   trait so it is unit-tested natively
//! - `shared`, `config`: what `on_configure` builds
//! - `state_keys`: the filter-state keys a decision is written to
//! - `embedded`: the bundle `aegis build` embeds
//! - `metrics`, `reply`: metric names and local replies
//! - `listing`: the agent's view of an MCP server's `tools/list` answer
//! - `rate`, `budget`: `budget.rps` and `budget.daily_usd` over shared data
//!   (`kv`), with the UTC days of budgets from the engine (`day`)
//! - `stream::gate`: the stages after the policy (rate, approval, budget)
//!   and their calls to the control plane, worded in `callout`
//! - `reload`: new bundles from the control plane, polled on the tick
//!
//! See `README.md` for the configuration, filter state and metrics.

mod adapter;
mod budget;
mod callout;
mod config;
mod embedded;
mod host;
mod kv;
mod listing;
mod metrics;
mod rate;
mod reload;
mod reply;
mod shared;
mod state_keys;
mod stream;

#[cfg(test)]
mod istio_manifests;
#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(adapter::panic_hook));
    proxy_wasm::set_root_context(adapter::new_root);
}}
