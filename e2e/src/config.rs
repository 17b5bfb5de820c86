//! Envoy bootstraps for the tests, made from the shipped configs
//! (`envoy/sidecar.yaml`, `envoy/egress-istio-mode.yaml`) so the tests run
//! exactly what users copy: only ports, the blob path, the trusted key and
//! the number of listeners change.

use crate::envoy::{free_ports, Envoy};
use crate::{err, repo_root, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The two ways the filter runs in Envoy (`filter/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `envoy/sidecar.yaml`: `allow_on_headers_stop_iteration: true`,
    /// headers held until the verdict.
    Sidecar,
    /// `envoy/egress-istio-mode.yaml`: headers go upstream first, the body
    /// is held; a deny resets the upstream request.
    Istio,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Sidecar, Mode::Istio];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Sidecar => "sidecar",
            Mode::Istio => "istio",
        }
    }

    /// The shipped config this mode runs.
    pub fn config_file(self) -> PathBuf {
        let name = match self {
            Mode::Sidecar => "sidecar.yaml",
            Mode::Istio => "egress-istio-mode.yaml",
        };
        repo_root().join("envoy").join(name)
    }

    /// Whether Envoy holds the request headers while the filter waits for
    /// the body.
    pub fn holds_headers(self) -> bool {
        self == Mode::Sidecar
    }
}

/// Every shipped config: `envoy/*.yaml`.
pub fn shipped_configs() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("envoy");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    out.sort();
    Ok(out)
}

/// A shipped YAML config as a JSON value.
pub fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    serde_saphyr::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

fn get<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = match key.parse::<usize>() {
            Ok(n) => cur.get(n),
            Err(_) => cur.get(key),
        }
        .ok_or_else(|| {
            err(format!(
                "config has no `{}`",
                path.get(..=i).unwrap_or_default().join(".")
            ))
        })?;
    }
    Ok(cur)
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Result<&'a mut Value> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        let missing = || {
            err(format!(
                "config has no `{}`",
                path.get(..=i).unwrap_or_default().join(".")
            ))
        };
        cur = match key.parse::<usize>() {
            Ok(n) => cur.get_mut(n),
            Err(_) => cur.get_mut(key),
        }
        .ok_or_else(missing)?;
    }
    Ok(cur)
}

/// The listeners of a bootstrap.
pub fn listeners(bootstrap: &Value) -> Result<&Vec<Value>> {
    get(bootstrap, &["static_resources", "listeners"])?
        .as_array()
        .ok_or_else(|| err("`static_resources.listeners` is not a list"))
}

/// The HTTP filters of a listener's connection manager.
fn http_filters_mut(listener: &mut Value) -> Result<&mut Vec<Value>> {
    get_mut(
        listener,
        &[
            "filter_chains",
            "0",
            "filters",
            "0",
            "typed_config",
            "http_filters",
        ],
    )?
    .as_array_mut()
    .ok_or_else(|| err("`http_filters` is not a list"))
}

/// The Aegis plugin (`config` of the wasm filter) of a listener.
pub fn wasm_plugin(listener: &Value) -> Result<&Value> {
    let filters = get(
        listener,
        &[
            "filter_chains",
            "0",
            "filters",
            "0",
            "typed_config",
            "http_filters",
        ],
    )?
    .as_array()
    .ok_or_else(|| err("`http_filters` is not a list"))?;
    filters
        .iter()
        .find(|f| f.pointer("/typed_config/@type").and_then(Value::as_str) == Some(WASM_TYPE))
        .and_then(|f| f.pointer("/typed_config/config"))
        .ok_or_else(|| err("no wasm filter in the listener"))
}

fn wasm_plugin_mut(listener: &mut Value) -> Result<&mut Value> {
    http_filters_mut(listener)?
        .iter_mut()
        .find(|f| f.pointer("/typed_config/@type").and_then(Value::as_str) == Some(WASM_TYPE))
        .and_then(|f| f.pointer_mut("/typed_config/config"))
        .ok_or_else(|| err("no wasm filter in the listener"))
}

/// The filter's own JSON configuration inside a plugin.
pub fn filter_configuration(plugin: &Value) -> Result<Value> {
    let text = plugin
        .pointer("/configuration/value")
        .and_then(Value::as_str)
        .ok_or_else(|| err("the wasm plugin has no `configuration.value` string"))?;
    serde_json::from_str(text).map_err(|e| err(format!("filter configuration is not JSON: {e}")))
}

/// The Envoy plugin field `allow_on_headers_stop_iteration` (absent = false).
pub fn plugin_holds_headers(plugin: &Value) -> bool {
    plugin
        .get("allow_on_headers_stop_iteration")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// One listener of a test Envoy: a policy blob on a port.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub port: u16,
    pub blob: PathBuf,
    /// Base64 of the raw public key that signed the blob.
    pub trusted_key: String,
    /// Overrides the filter's `max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Sets the filter's `filter_state` (the keys it writes).
    pub filter_state: Option<Vec<String>>,
}

/// The HTTP connection manager of a listener.
pub fn connection_manager(listener: &Value) -> Result<&Value> {
    get(
        listener,
        &["filter_chains", "0", "filters", "0", "typed_config"],
    )
}

/// Whether a listener's connection manager takes both HTTP/1.1 and HTTP/2
/// with prior knowledge (h2c) on the same port: `codec_type` absent or
/// `AUTO` (Envoy's default, which detects the HTTP/2 preface).
pub fn accepts_http1_and_h2c(listener: &Value) -> Result<bool> {
    Ok(match connection_manager(listener)?.get("codec_type") {
        None => true,
        Some(v) => v.as_str() == Some("AUTO"),
    })
}

/// A test bootstrap from a shipped one: its first listener copied once per
/// spec, the admin and upstream ports replaced. The listener must accept
/// HTTP/1.1 and h2c ([`accepts_http1_and_h2c`]): the corpus runs both.
pub fn bootstrap(
    shipped: &Value,
    admin_port: u16,
    upstream_port: u16,
    specs: &[ListenerSpec],
) -> Result<Value> {
    let mut b = shipped.clone();
    *get_mut(
        &mut b,
        &["admin", "address", "socket_address", "port_value"],
    )? = admin_port.into();
    let template = listeners(&b)?
        .first()
        .cloned()
        .ok_or_else(|| err("the shipped config has no listener"))?;
    if !accepts_http1_and_h2c(&template)? {
        return Err(err(format!(
            "the shipped listener sets `codec_type: {}`; the tests send HTTP/1.1 and \
             HTTP/2 (prior knowledge) to it, which needs `AUTO` (the default)",
            connection_manager(&template)?
                .get("codec_type")
                .unwrap_or(&Value::Null)
        )));
    }
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let mut l = template.clone();
        *get_mut(&mut l, &["name"])? = Value::String(s.name.clone());
        *get_mut(&mut l, &["address", "socket_address", "port_value"])? = s.port.into();
        let plugin = wasm_plugin_mut(&mut l)?;
        *get_mut(plugin, &["vm_config", "code", "local", "filename"])? =
            Value::String(s.blob.display().to_string());
        let mut fc = filter_configuration(plugin)?;
        let obj = fc
            .as_object_mut()
            .ok_or_else(|| err("filter configuration is not a JSON object"))?;
        obj.insert("trusted_keys".into(), vec![s.trusted_key.clone()].into());
        if let Some(n) = s.max_body_bytes {
            obj.insert("max_body_bytes".into(), n.into());
        }
        if let Some(keys) = &s.filter_state {
            obj.insert("filter_state".into(), keys.clone().into());
        }
        *get_mut(plugin, &["configuration", "value"])? = Value::String(fc.to_string());
        out.push(l);
    }
    *get_mut(&mut b, &["static_resources", "listeners"])? = Value::Array(out);

    set_cluster_port(&mut b, "upstream", upstream_port)?;
    Ok(b)
}

/// Points the (single endpoint) cluster `name` at `127.0.0.1:port`.
pub fn set_cluster_port(bootstrap: &mut Value, name: &str, port: u16) -> Result<()> {
    let clusters = get_mut(bootstrap, &["static_resources", "clusters"])?
        .as_array_mut()
        .ok_or_else(|| err("`static_resources.clusters` is not a list"))?;
    let cluster = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| err(format!("the config has no cluster `{name}`")))?;
    *get_mut(
        cluster,
        &[
            "load_assignment",
            "endpoints",
            "0",
            "lb_endpoints",
            "0",
            "endpoint",
            "address",
            "socket_address",
            "port_value",
        ],
    )? = port.into();
    Ok(())
}

/// Edits the filter's own JSON configuration of a listener in place.
pub fn edit_filter_configuration(
    listener: &mut Value,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>) -> Result<()>,
) -> Result<()> {
    let plugin = wasm_plugin_mut(listener)?;
    let mut fc = filter_configuration(plugin)?;
    edit(
        fc.as_object_mut()
            .ok_or_else(|| err("filter configuration is not a JSON object"))?,
    )?;
    *get_mut(plugin, &["configuration", "value"])? = Value::String(fc.to_string());
    Ok(())
}

/// A listener to start, before ports are chosen.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub blob: PathBuf,
    pub trusted_key: String,
    pub max_body_bytes: Option<u64>,
    pub filter_state: Option<Vec<String>>,
}

/// A running test Envoy and the ports of its listeners (same order as
/// given).
pub struct Gateway {
    pub envoy: Envoy,
    pub ports: Vec<u16>,
    pub config_path: PathBuf,
}

/// Starts Envoy with `mode`'s shipped config, one listener per entry, all
/// routing to the upstream on `upstream_port`. Free ports are picked by
/// binding `:0`; if another process takes one before Envoy binds it, the
/// start is retried with new ports.
pub fn start(
    envoy_bin: &Path,
    mode: Mode,
    workdir: &Path,
    upstream_port: u16,
    listeners: &[Listener],
) -> Result<Gateway> {
    let shipped = load(&mode.config_file())?;
    start_from(
        envoy_bin,
        &shipped,
        mode.name(),
        workdir,
        upstream_port,
        listeners,
        |_| Ok(()),
    )
}

/// [`start`] from the config `base` (written as `envoy-<name>-N.json`),
/// with `edit` applied to the bootstrap made for each attempt.
pub fn start_from(
    envoy_bin: &Path,
    base: &Value,
    name: &str,
    workdir: &Path,
    upstream_port: u16,
    listeners: &[Listener],
    edit: impl Fn(&mut Value) -> Result<()>,
) -> Result<Gateway> {
    let mut last = err("not started");
    for attempt in 0..3 {
        let ports = free_ports(listeners.len() + 1)?;
        let (admin, rest) = ports.split_first().ok_or_else(|| err("no ports"))?;
        let specs: Vec<ListenerSpec> = listeners
            .iter()
            .zip(rest)
            .map(|(l, &port)| ListenerSpec {
                name: l.name.clone(),
                port,
                blob: l.blob.clone(),
                trusted_key: l.trusted_key.clone(),
                max_body_bytes: l.max_body_bytes,
                filter_state: l.filter_state.clone(),
            })
            .collect();
        let mut cfg = bootstrap(base, *admin, upstream_port, &specs)?;
        edit(&mut cfg)?;
        let config_path = workdir.join(format!("envoy-{name}-{attempt}.json"));
        std::fs::write(&config_path, cfg.to_string())
            .map_err(|e| err(format!("cannot write {}: {e}", config_path.display())))?;
        match Envoy::start(envoy_bin, &config_path, workdir, *admin) {
            Ok(envoy) => {
                return Ok(Gateway {
                    envoy,
                    ports: rest.to_vec(),
                    config_path,
                })
            }
            Err(e) if e.0.contains("ddress already in use") => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
