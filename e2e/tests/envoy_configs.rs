//! The shipped Envoy configs (`envoy/*.yaml`): they validate with the real
//! Envoy exactly as they are, and they say what `filter/README.md` and `envoy/README.md` say.
//! `envoy/ecds.yaml` takes its filter from the ECDS resource
//! `envoy/ecds-deliver.sh` writes, which validation does not read: that
//! resource is validated inlined into the same bootstrap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_e2e::blob::{self, demo_key, key_b64};
use aegis_e2e::config::{self, filter_configuration, plugin_holds_headers, wasm_plugin, Mode};
use aegis_e2e::envoy;
use aegis_e2e::repo_root;
use serde_json::Value;
use std::path::Path;

/// Places a blob where the shipped configs look for it
/// (`out/envoy/filter.wasm`, relative to Envoy's working folder).
fn blob_at_config_path(cwd: &Path, key: &ed25519_dalek::SigningKey) {
    let out = cwd.join("out").join("envoy");
    std::fs::create_dir_all(&out).unwrap();
    // The tools' key files the gateway config reads (envoy/secrets/).
    let secrets = cwd.join("envoy").join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    for entry in std::fs::read_dir(repo_root().join("envoy").join("secrets")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, secrets.join(p.file_name().unwrap())).unwrap();
    }
    blob::build(
        &[repo_root().join("policies").join("finance")],
        key,
        &out.join("filter.wasm"),
    )
    .unwrap();
    // The ECDS resource envoy/ecds.yaml watches (out/envoy/ecds/aegis.yaml),
    // delivered as the README says.
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("envoy").join("ecds-deliver.sh"))
        .arg("out/envoy/filter.wasm")
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn is_ecds(config: &Path) -> bool {
    config.file_name().is_some_and(|n| n == "ecds.yaml")
}

/// `envoy/ecds.yaml` with the filter of the delivered ECDS resource in
/// place of its `config_discovery`: what Envoy runs once it has read the
/// resource, as a bootstrap validation does load.
fn ecds_inlined(cwd: &Path) -> std::path::PathBuf {
    let mut b = config::load(&repo_root().join("envoy").join("ecds.yaml")).unwrap();
    let resource = config::load(&cwd.join("out/envoy/ecds/aegis.yaml")).unwrap();
    let typed_config = resource["resources"][0]["typed_config"].clone();
    let filters = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap();
    let aegis = filters.iter_mut().find(|f| f["name"] == "aegis").unwrap();
    *aegis = serde_json::json!({"name": "aegis", "typed_config": typed_config});
    let path = cwd.join("ecds-inlined.json");
    std::fs::write(&path, b.to_string()).unwrap();
    path
}

#[test]
fn shipped_configs_validate_as_they_are() {
    let Some(envoy) = common::envoy_or_skip("shipped_configs_validate_as_they_are") else {
        return;
    };
    let dir = aegis_e2e::workdir("validate").unwrap();
    // What envoy/demo-blob.sh builds: the finance policies, demo key.
    blob_at_config_path(dir.path(), &demo_key());
    let configs = config::shipped_configs().unwrap();
    assert!(configs.len() >= 2, "{configs:?}");
    let mut checked = configs.clone();
    if configs.iter().any(|c| is_ecds(c)) {
        checked.push(ecds_inlined(dir.path()));
    }
    for c in &checked {
        let out = envoy::validate(&envoy, c, dir.path()).unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{} does not validate:\n{log}",
            c.display()
        );
        assert!(log.contains("' OK"), "{}:\n{log}", c.display());
        // Validation really ran the filter's configure step (not for a
        // filter that comes through ECDS: its inlined copy runs it).
        if !is_ecds(c) {
            assert!(log.contains("aegis: ready:"), "{}:\n{log}", c.display());
        }
    }
}

#[test]
fn validation_runs_the_filter_and_refuses_an_untrusted_blob() {
    let Some(envoy) = common::envoy_or_skip("validation_refuses_an_untrusted_blob") else {
        return;
    };
    let dir = aegis_e2e::workdir("validate-untrusted").unwrap();
    // A missing blob is a validation error.
    let sidecar = Mode::Sidecar.config_file();
    let out = envoy::validate(&envoy, &sidecar, dir.path()).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out/envoy/filter.wasm"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A blob signed by a key the config does not trust fails configure,
    // and the plugin fails closed.
    let other = blob::fresh_key(dir.path(), "other").unwrap();
    blob_at_config_path(dir.path(), &other);
    for c in config::shipped_configs().unwrap() {
        let c = if is_ecds(&c) {
            ecds_inlined(dir.path())
        } else {
            c
        };
        let out = envoy::validate(&envoy, &c, dir.path()).unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{} accepted an untrusted blob",
            c.display()
        );
        assert!(log.contains("not trusted"), "{}:\n{log}", c.display());
        assert!(log.contains("Unable to create Wasm plugin aegis"), "{log}");
    }
}

#[test]
fn shipped_configs_say_what_the_design_says() {
    let demo = key_b64(&demo_key().verifying_key());
    // The demo key is the one envoy/demo-blob.sh derives.
    assert_eq!(demo, "7+V6NitnMhh/86FLWtseen9yZuBStTJZWaQG+HagCcQ=");
    for mode in Mode::ALL {
        let path = mode.config_file();
        let name = path.display().to_string();
        let b = config::load(&path).unwrap();
        let listeners = config::listeners(&b).unwrap();
        assert_eq!(listeners.len(), 1, "{name}");
        let plugin = wasm_plugin(&listeners[0]).unwrap();
        let vm = &plugin["vm_config"];
        assert_eq!(vm["runtime"], "envoy.wasm.runtime.v8", "{name}");
        assert_eq!(
            vm["code"]["local"]["filename"], "out/envoy/filter.wasm",
            "{name}"
        );
        assert_eq!(plugin["failure_policy"], "FAIL_CLOSED", "{name}");
        assert_eq!(plugin["root_id"], "aegis", "{name}");

        // Envoy's field and the filter's own key agree, per mode.
        let fc = filter_configuration(plugin).unwrap();
        let filter_holds = fc["allow_on_headers_stop_iteration"]
            .as_bool()
            .unwrap_or(false);
        assert_eq!(plugin_holds_headers(plugin), mode.holds_headers(), "{name}");
        assert_eq!(filter_holds, mode.holds_headers(), "{name}");
        assert_eq!(fc["trusted_keys"], serde_json::json!([demo]), "{name}");

        // The wasm filter runs before the router.
        let hcm = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
        let filters: Vec<&str> = hcm["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(filters, ["aegis", "envoy.filters.http.router"], "{name}");
        assert_eq!(hcm["preserve_external_request_id"], true, "{name}");
        // HTTP/1.1 and HTTP/2 with prior knowledge on the same listener.
        assert!(
            config::accepts_http1_and_h2c(&listeners[0]).unwrap(),
            "{name}: codec_type {}",
            hcm["codec_type"]
        );
        // The path reaches the filter (and the upstream) as the agent sent
        // it: no normalization that would make the two read it apart.
        for key in [
            "normalize_path",
            "merge_slashes",
            "path_with_escaped_slashes_action",
        ] {
            assert!(hcm.get(key).is_none(), "{name}: {key} {}", hcm[key]);
        }

        // The access log shows every decision field from filter state.
        let fmt = &hcm["access_log"][0]["typed_config"]["log_format"]["json_format"];
        for (field, key) in [
            ("decision", "aegis_decision"),
            ("reason", "aegis_reason"),
            ("rule", "aegis_rule"),
            ("agent", "aegis_agent"),
            ("tool", "aegis_tool"),
            ("action", "aegis_action"),
            ("mode", "aegis_mode"),
            ("policy_version", "aegis_policy_version"),
            ("request_id", "aegis_request_id"),
        ] {
            assert_eq!(
                fmt[field],
                Value::String(format!("%FILTER_STATE(wasm.{key}:PLAIN)%")),
                "{name}: access log field {field}"
            );
        }
        for field in ["status", "x_request_id"] {
            assert!(fmt.get(field).is_some(), "{name}: access log field {field}");
        }

        // One stats tag per metric label, in the Istio convention.
        let tags: Vec<(String, String)> = b["stats_config"]["stats_tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["tag_name"].as_str().unwrap().to_string(),
                    t["regex"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for label in ["agent", "tool", "rule", "decision", "mode", "outcome"] {
            let want = format!("({label}=\\.=(.*?);\\.;)");
            assert!(
                tags.contains(&(label.to_string(), want.clone())),
                "{name}: no stats tag {label} = {want}: {tags:?}"
            );
        }
        // Admin on loopback only.
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
    }
}

/// `envoy/ecds.yaml` is `envoy/sidecar.yaml` with the filter through ECDS:
/// only a Wasm filter may arrive, and nothing stands in for it before one
/// does (no `default_config`: Envoy answers 500 until then).
#[test]
fn the_ecds_config_takes_only_a_wasm_filter_and_has_no_default() {
    let ecds = config::load(&repo_root().join("envoy").join("ecds.yaml")).unwrap();
    let sidecar = config::load(&Mode::Sidecar.config_file()).unwrap();
    let hcm = |b: &Value| {
        b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            .clone()
    };
    let (e, s) = (hcm(&ecds), hcm(&sidecar));
    let names = |h: &Value| -> Vec<String> {
        h["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&e), names(&s));
    let discovery = &e["http_filters"][0]["config_discovery"];
    assert_eq!(
        discovery["type_urls"],
        serde_json::json!(["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"])
    );
    assert!(discovery.get("default_config").is_none(), "{discovery}");
    assert!(
        discovery
            .get("apply_default_config_without_warming")
            .is_none(),
        "{discovery}"
    );
    let source = &discovery["config_source"]["path_config_source"];
    assert_eq!(source["path"], "out/envoy/ecds/aegis.yaml");
    assert_eq!(source["watched_directory"]["path"], "out/envoy/ecds");
    // Everything else as in the sidecar: listener, routes, access log,
    // stats tags, admin on loopback, the upstream cluster.
    for key in [
        "access_log",
        "route_config",
        "stat_prefix",
        "preserve_external_request_id",
    ] {
        assert_eq!(e[key], s[key], "{key}");
    }
    assert_eq!(ecds["stats_config"], sidecar["stats_config"]);
    assert_eq!(ecds["admin"], sidecar["admin"]);
    assert_eq!(
        ecds["static_resources"]["clusters"],
        sidecar["static_resources"]["clusters"]
    );
    assert_eq!(
        ecds["static_resources"]["listeners"][0]["address"],
        sidecar["static_resources"]["listeners"][0]["address"]
    );
}
