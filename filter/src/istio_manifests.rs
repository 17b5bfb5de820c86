//! Checks the Kubernetes and Istio manifests under `istio/`: every YAML
//! document parses, its `apiVersion`/`kind` is one Aegis ships, and its
//! fields match a schema written from Istio's published API (WasmPlugin,
//! ServiceEntry, Gateway, VirtualService, DestinationRule, IstioOperator's
//! mesh config) and the Kubernetes types used: unknown fields, wrong types
//! and values outside an enum are errors naming their path. Each
//! WasmPlugin's `pluginConfig`, turned into a JSON string as Istio does, must
//! be accepted by the parser `on_configure` uses.

use crate::config::Config;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A field's type. Objects list their known fields; nothing else is accepted.
enum Ty {
    Str,
    Int,
    Bool,
    /// A string or an integer (Kubernetes `IntOrString`).
    IntOrStr,
    Enum(&'static [&'static str]),
    Obj(&'static [(&'static str, Ty)]),
    List(&'static Ty),
    /// A map from strings to strings (labels, annotations, stringData).
    StrMap,
    /// Anything: an opaque `google.protobuf.Struct` checked elsewhere.
    Any,
}

use Ty::*;

const META: Ty = Obj(&[
    ("name", Str),
    ("namespace", Str),
    ("labels", StrMap),
    ("annotations", StrMap),
]);
const MATCH_LABELS: Ty = Obj(&[("matchLabels", StrMap)]);
const LABEL_SELECTOR: Ty = Obj(&[
    ("matchLabels", StrMap),
    (
        "matchExpressions",
        List(&Obj(&[
            ("key", Str),
            ("operator", Enum(&["In", "NotIn", "Exists", "DoesNotExist"])),
            ("values", List(&Str)),
        ])),
    ),
]);
const POLICY_TARGET_REF: Ty = Obj(&[
    ("group", Str),
    ("kind", Str),
    ("name", Str),
    ("namespace", Str),
]);

/// `extensions.istio.io/v1alpha1` WasmPlugin, from Istio's API reference.
const WASM_PLUGIN: Ty = Obj(&[
    ("selector", MATCH_LABELS),
    ("targetRef", POLICY_TARGET_REF),
    ("targetRefs", List(&POLICY_TARGET_REF)),
    ("url", Str),
    ("sha256", Str),
    (
        "imagePullPolicy",
        Enum(&["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]),
    ),
    ("imagePullSecret", Str),
    ("verificationKey", Str),
    ("pluginConfig", Any),
    ("pluginName", Str),
    (
        "phase",
        Enum(&["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]),
    ),
    ("priority", Int),
    (
        "failStrategy",
        Enum(&["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]),
    ),
    (
        "vmConfig",
        Obj(&[(
            "env",
            List(&Obj(&[
                ("name", Str),
                ("value", Str),
                ("valueFrom", Enum(&["INLINE", "HOST"])),
            ])),
        )]),
    ),
    (
        "match",
        List(&Obj(&[
            (
                "mode",
                Enum(&["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"]),
            ),
            ("ports", List(&Obj(&[("number", Int)]))),
        ])),
    ),
    (
        "type",
        Enum(&["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"]),
    ),
]);

const PORT_SELECTOR: Ty = Obj(&[("number", Int)]);
const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"];

/// `networking.istio.io/v1` ServiceEntry.
const SERVICE_ENTRY: Ty = Obj(&[
    ("hosts", List(&Str)),
    ("addresses", List(&Str)),
    (
        "ports",
        List(&Obj(&[
            ("number", Int),
            ("protocol", Enum(PROTOCOLS)),
            ("name", Str),
            ("targetPort", Int),
        ])),
    ),
    ("location", Enum(&["MESH_EXTERNAL", "MESH_INTERNAL"])),
    (
        "resolution",
        Enum(&["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]),
    ),
    ("exportTo", List(&Str)),
    ("subjectAltNames", List(&Str)),
]);

/// `networking.istio.io/v1` Gateway.
const GATEWAY: Ty = Obj(&[
    ("selector", StrMap),
    (
        "servers",
        List(&Obj(&[
            (
                "port",
                Obj(&[
                    ("number", Int),
                    ("protocol", Enum(PROTOCOLS)),
                    ("name", Str),
                    ("targetPort", Int),
                ]),
            ),
            ("bind", Str),
            ("hosts", List(&Str)),
            (
                "tls",
                Obj(&[
                    ("httpsRedirect", Bool),
                    (
                        "mode",
                        Enum(&[
                            "PASSTHROUGH",
                            "SIMPLE",
                            "MUTUAL",
                            "AUTO_PASSTHROUGH",
                            "ISTIO_MUTUAL",
                            "OPTIONAL_MUTUAL",
                        ]),
                    ),
                    ("credentialName", Str),
                    ("subjectAltNames", List(&Str)),
                    (
                        "minProtocolVersion",
                        Enum(&["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]),
                    ),
                ]),
            ),
            ("name", Str),
        ])),
    ),
]);

/// `networking.istio.io/v1` VirtualService (the HTTP routes used here).
const VIRTUAL_SERVICE: Ty = Obj(&[
    ("hosts", List(&Str)),
    ("gateways", List(&Str)),
    ("exportTo", List(&Str)),
    (
        "http",
        List(&Obj(&[
            ("name", Str),
            (
                "match",
                List(&Obj(&[
                    ("name", Str),
                    ("gateways", List(&Str)),
                    ("port", Int),
                    ("sniHosts", List(&Str)),
                ])),
            ),
            (
                "route",
                List(&Obj(&[
                    (
                        "destination",
                        Obj(&[("host", Str), ("subset", Str), ("port", PORT_SELECTOR)]),
                    ),
                    ("weight", Int),
                ])),
            ),
            ("timeout", Str),
        ])),
    ),
]);

const CLIENT_TLS: Ty = Obj(&[
    (
        "mode",
        Enum(&["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]),
    ),
    ("sni", Str),
    ("credentialName", Str),
    ("subjectAltNames", List(&Str)),
    ("insecureSkipVerify", Bool),
]);
const TRAFFIC_POLICY: Ty = Obj(&[
    ("tls", CLIENT_TLS),
    (
        "portLevelSettings",
        List(&Obj(&[("port", PORT_SELECTOR), ("tls", CLIENT_TLS)])),
    ),
]);

/// `networking.istio.io/v1` DestinationRule.
const DESTINATION_RULE: Ty = Obj(&[
    ("host", Str),
    ("trafficPolicy", TRAFFIC_POLICY),
    (
        "subsets",
        List(&Obj(&[
            ("name", Str),
            ("labels", StrMap),
            ("trafficPolicy", TRAFFIC_POLICY),
        ])),
    ),
    ("exportTo", List(&Str)),
]);

/// `install.istio.io/v1alpha1` IstioOperator: the mesh config fields Aegis sets.
const ISTIO_OPERATOR: Ty = Obj(&[(
    "meshConfig",
    Obj(&[
        (
            "outboundTrafficPolicy",
            Obj(&[("mode", Enum(&["REGISTRY_ONLY", "ALLOW_ANY"]))]),
        ),
        (
            "defaultConfig",
            Obj(&[
                ("extraStatTags", List(&Str)),
                (
                    "proxyStatsMatcher",
                    Obj(&[
                        ("inclusionPrefixes", List(&Str)),
                        ("inclusionSuffixes", List(&Str)),
                        ("inclusionRegexps", List(&Str)),
                    ]),
                ),
            ]),
        ),
    ]),
)]);

const NETWORK_POLICY_PORT: Ty = Obj(&[
    ("protocol", Enum(&["TCP", "UDP", "SCTP"])),
    ("port", IntOrStr),
    ("endPort", Int),
]);
const NETWORK_POLICY_PEER: Ty = Obj(&[
    ("podSelector", LABEL_SELECTOR),
    ("namespaceSelector", LABEL_SELECTOR),
    ("ipBlock", Obj(&[("cidr", Str), ("except", List(&Str))])),
]);

/// `networking.k8s.io/v1` NetworkPolicy.
const NETWORK_POLICY: Ty = Obj(&[
    ("podSelector", LABEL_SELECTOR),
    ("policyTypes", List(&Enum(&["Ingress", "Egress"]))),
    (
        "egress",
        List(&Obj(&[
            ("to", List(&NETWORK_POLICY_PEER)),
            ("ports", List(&NETWORK_POLICY_PORT)),
        ])),
    ),
    (
        "ingress",
        List(&Obj(&[
            ("from", List(&NETWORK_POLICY_PEER)),
            ("ports", List(&NETWORK_POLICY_PORT)),
        ])),
    ),
]);

const PROBE: Ty = Obj(&[
    (
        "httpGet",
        Obj(&[
            ("path", Str),
            ("port", IntOrStr),
            ("scheme", Enum(&["HTTP", "HTTPS"])),
        ]),
    ),
    ("initialDelaySeconds", Int),
    ("periodSeconds", Int),
    ("timeoutSeconds", Int),
    ("failureThreshold", Int),
    ("successThreshold", Int),
]);
const QUANTITIES: Ty = Obj(&[("cpu", IntOrStr), ("memory", IntOrStr)]);
const CONTAINER: Ty = Obj(&[
    ("name", Str),
    ("image", Str),
    (
        "imagePullPolicy",
        Enum(&["Always", "IfNotPresent", "Never"]),
    ),
    ("command", List(&Str)),
    ("args", List(&Str)),
    (
        "env",
        List(&Obj(&[
            ("name", Str),
            ("value", Str),
            (
                "valueFrom",
                Obj(&[(
                    "secretKeyRef",
                    Obj(&[("name", Str), ("key", Str), ("optional", Bool)]),
                )]),
            ),
        ])),
    ),
    (
        "ports",
        List(&Obj(&[
            ("name", Str),
            ("containerPort", Int),
            ("protocol", Enum(&["TCP", "UDP", "SCTP"])),
        ])),
    ),
    ("readinessProbe", PROBE),
    ("livenessProbe", PROBE),
    ("startupProbe", PROBE),
    (
        "resources",
        Obj(&[("requests", QUANTITIES), ("limits", QUANTITIES)]),
    ),
    (
        "securityContext",
        Obj(&[
            ("allowPrivilegeEscalation", Bool),
            ("readOnlyRootFilesystem", Bool),
            ("runAsNonRoot", Bool),
            ("runAsUser", Int),
            (
                "capabilities",
                Obj(&[("drop", List(&Str)), ("add", List(&Str))]),
            ),
        ]),
    ),
    (
        "volumeMounts",
        List(&Obj(&[
            ("name", Str),
            ("mountPath", Str),
            ("readOnly", Bool),
            ("subPath", Str),
        ])),
    ),
]);

/// `apps/v1` Deployment (the pod fields used here).
const DEPLOYMENT: Ty = Obj(&[
    ("replicas", Int),
    (
        "strategy",
        Obj(&[("type", Enum(&["Recreate", "RollingUpdate"]))]),
    ),
    ("selector", LABEL_SELECTOR),
    (
        "template",
        Obj(&[
            ("metadata", META),
            (
                "spec",
                Obj(&[
                    ("automountServiceAccountToken", Bool),
                    ("serviceAccountName", Str),
                    (
                        "securityContext",
                        Obj(&[
                            ("runAsNonRoot", Bool),
                            ("runAsUser", Int),
                            ("runAsGroup", Int),
                            ("fsGroup", Int),
                            (
                                "seccompProfile",
                                Obj(&[(
                                    "type",
                                    Enum(&["RuntimeDefault", "Localhost", "Unconfined"]),
                                )]),
                            ),
                        ]),
                    ),
                    ("containers", List(&CONTAINER)),
                    (
                        "volumes",
                        List(&Obj(&[
                            ("name", Str),
                            (
                                "persistentVolumeClaim",
                                Obj(&[("claimName", Str), ("readOnly", Bool)]),
                            ),
                            ("emptyDir", Obj(&[("medium", Str), ("sizeLimit", Str)])),
                            ("secret", Obj(&[("secretName", Str), ("defaultMode", Int)])),
                        ])),
                    ),
                ]),
            ),
        ]),
    ),
]);

/// `v1` Service.
const SERVICE: Ty = Obj(&[
    (
        "type",
        Enum(&["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]),
    ),
    ("selector", StrMap),
    (
        "ports",
        List(&Obj(&[
            ("name", Str),
            ("port", Int),
            ("targetPort", IntOrStr),
            ("protocol", Enum(&["TCP", "UDP", "SCTP"])),
            ("appProtocol", Str),
        ])),
    ),
]);

/// `v1` PersistentVolumeClaim.
const PVC: Ty = Obj(&[
    (
        "accessModes",
        List(&Enum(&[
            "ReadWriteOnce",
            "ReadOnlyMany",
            "ReadWriteMany",
            "ReadWriteOncePod",
        ])),
    ),
    ("storageClassName", Str),
    ("resources", Obj(&[("requests", Obj(&[("storage", Str)]))])),
]);

/// `kustomize.config.k8s.io/v1beta1` Kustomization (the fields used here).
const KUSTOMIZATION: &[(&str, Ty)] = &[
    ("apiVersion", Str),
    ("kind", Str),
    ("namespace", Str),
    ("resources", List(&Str)),
    (
        "labels",
        List(&Obj(&[
            ("pairs", StrMap),
            ("includeSelectors", Bool),
            ("includeTemplates", Bool),
        ])),
    ),
    (
        "images",
        List(&Obj(&[
            ("name", Str),
            ("newName", Str),
            ("newTag", Str),
            ("digest", Str),
        ])),
    ),
];

/// The top-level shape of a kind: which fields a document may have.
fn top_level(api_version: &str, kind: &str) -> Option<Vec<(&'static str, &'static Ty)>> {
    const API: &Ty = &Str;
    const META_REF: &Ty = &META;
    let spec = |t: &'static Ty| {
        vec![
            ("apiVersion", API),
            ("kind", API),
            ("metadata", META_REF),
            ("spec", t),
        ]
    };
    Some(match (api_version, kind) {
        ("extensions.istio.io/v1alpha1", "WasmPlugin") => spec(&WASM_PLUGIN),
        ("networking.istio.io/v1", "ServiceEntry") => spec(&SERVICE_ENTRY),
        ("networking.istio.io/v1", "Gateway") => spec(&GATEWAY),
        ("networking.istio.io/v1", "VirtualService") => spec(&VIRTUAL_SERVICE),
        ("networking.istio.io/v1", "DestinationRule") => spec(&DESTINATION_RULE),
        ("install.istio.io/v1alpha1", "IstioOperator") => spec(&ISTIO_OPERATOR),
        ("networking.k8s.io/v1", "NetworkPolicy") => spec(&NETWORK_POLICY),
        ("apps/v1", "Deployment") => spec(&DEPLOYMENT),
        ("v1", "Service") => spec(&SERVICE),
        ("v1", "PersistentVolumeClaim") => spec(&PVC),
        ("v1", "Namespace") => vec![("apiVersion", API), ("kind", API), ("metadata", META_REF)],
        ("v1", "Secret") => {
            const TYPE: &Ty = &Enum(&["Opaque"]);
            const MAP: &Ty = &StrMap;
            vec![
                ("apiVersion", API),
                ("kind", API),
                ("metadata", META_REF),
                ("type", TYPE),
                ("stringData", MAP),
            ]
        }
        ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
            KUSTOMIZATION.iter().map(|(k, t)| (*k, t)).collect()
        }
        _ => return None,
    })
}

fn check(value: &Value, ty: &Ty, path: &str, errors: &mut Vec<String>) {
    let kind_ok = match (ty, value) {
        (Any, _) | (Str, Value::String(_)) | (Bool, Value::Bool(_)) => true,
        (Int, Value::Number(n)) | (IntOrStr, Value::Number(n)) => n.is_i64(),
        (IntOrStr, Value::String(_)) => true,
        (Enum(allowed), Value::String(s)) => {
            if !allowed.contains(&s.as_str()) {
                errors.push(format!(
                    "{path}: `{s}` is not one of {}",
                    allowed.join(", ")
                ));
            }
            true
        }
        (Obj(fields), Value::Object(map)) => {
            check_fields(map, fields.iter().map(|(k, t)| (*k, t)), path, errors);
            true
        }
        (List(item), Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                check(v, item, &format!("{path}[{i}]"), errors);
            }
            true
        }
        (StrMap, Value::Object(map)) => {
            for (k, v) in map {
                if !v.is_string() {
                    errors.push(format!("{path}.{k}: expected a string"));
                }
            }
            true
        }
        _ => false,
    };
    if !kind_ok {
        errors.push(format!("{path}: `{value}` has the wrong type"));
    }
}

fn check_fields<'a>(
    map: &serde_json::Map<String, Value>,
    fields: impl Iterator<Item = (&'a str, &'a Ty)> + Clone,
    path: &str,
    errors: &mut Vec<String>,
) {
    for (key, value) in map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match fields.clone().find(|(k, _)| k == key) {
            Some((_, ty)) => check(value, ty, &here, errors),
            None => errors.push(format!("{here}: unknown field `{key}`")),
        }
    }
}

/// Every problem of one YAML file, each naming the document and the path.
fn check_file(text: &str) -> Vec<String> {
    let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut errors = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let Value::Object(map) = doc else {
            errors.push(format!("document {i}: not a mapping"));
            continue;
        };
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some(fields) = top_level(api_version, kind) else {
            errors.push(format!("document {i}: unknown `{api_version}` `{kind}`"));
            continue;
        };
        let mut doc_errors = Vec::new();
        check_fields(map, fields.iter().copied(), "", &mut doc_errors);
        if kind == "WasmPlugin" {
            check_wasm_plugin(map.get("spec").unwrap_or(&Value::Null), &mut doc_errors);
        }
        errors.extend(
            doc_errors
                .into_iter()
                .map(|e| format!("document {i} ({kind}): {e}")),
        );
    }
    errors
}

/// What a WasmPlugin for Aegis must say beyond the schema.
fn check_wasm_plugin(spec: &Value, errors: &mut Vec<String>) {
    // Istio hands `pluginConfig` to the filter as a JSON string.
    match spec.get("pluginConfig") {
        None => errors.push("spec.pluginConfig: missing".into()),
        Some(config) => {
            let json = serde_json::to_string(config).unwrap();
            if let Err(e) = Config::parse(json.as_bytes()) {
                errors.push(format!("spec.pluginConfig: the filter refuses it: {e}"));
            }
        }
    }
    if spec.get("failStrategy").and_then(Value::as_str) != Some("FAIL_CLOSE") {
        errors.push("spec.failStrategy: must be FAIL_CLOSE".into());
    }
    let url = spec.get("url").and_then(Value::as_str).unwrap_or_default();
    let pinned = url.starts_with("oci://")
        && url.split_once("@sha256:").is_some_and(|(_, hex)| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if !pinned {
        errors.push(format!(
            "spec.url: `{url}` is not an OCI image pinned by sha256"
        ));
    }
}

fn istio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_manifest_matches_its_schema_and_the_filter_takes_its_config() {
    let mut files = Vec::new();
    yaml_files(&istio_dir(), &mut files);
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(istio_dir()).unwrap().display().to_string())
        .collect();
    for expected in [
        "sidecar/wasmplugin.yaml",
        "egress-gateway/wasmplugin.yaml",
        "egress-gateway/serviceentry.yaml",
        "egress-gateway/gateway.yaml",
        "egress-gateway/virtualservice.yaml",
        "egress-gateway/destinationrule.yaml",
        "mesh-config.yaml",
        "networkpolicy.yaml",
        "control-plane/kustomization.yaml",
        "control-plane/deployment.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is missing: {names:?}"
        );
    }
    let mut problems = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        let text = std::fs::read_to_string(file).unwrap();
        problems.extend(
            check_file(&text)
                .into_iter()
                .map(|e| format!("{name}: {e}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_kustomization_lists_every_file_beside_it() {
    let dir = istio_dir().join("control-plane");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap();
        if name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
}

#[test]
fn the_plugins_name_the_control_plane_cluster_as_istio_does() {
    let service: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(istio_dir().join("control-plane/service.yaml")).unwrap(),
    )
    .unwrap();
    let k: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(istio_dir().join("control-plane/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let fqdn = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().unwrap(),
        k["namespace"].as_str().unwrap()
    );
    let cluster = format!("outbound|{}||{fqdn}", service["spec"]["ports"][0]["port"]);
    for plugin in ["sidecar/wasmplugin.yaml", "egress-gateway/wasmplugin.yaml"] {
        let p: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(istio_dir().join(plugin)).unwrap())
                .unwrap();
        let cp = &p["spec"]["pluginConfig"]["control_plane"];
        assert_eq!(cp["cluster"], cluster.as_str(), "{plugin}");
        assert_eq!(cp["authority"], fqdn.as_str(), "{plugin}");
    }
}

#[test]
fn a_typo_in_a_manifest_fails_naming_the_key() {
    let text = std::fs::read_to_string(istio_dir().join("sidecar/wasmplugin.yaml")).unwrap();
    // A WasmPlugin field.
    let errors = check_file(&text.replace("failStrategy:", "failStratgy:"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.failStratgy: unknown field `failStratgy`")),
        "{errors:?}"
    );
    // A key of the filter's configuration, which Istio passes on as it is.
    let errors = check_file(&text.replace("max_body_bytes:", "max_body_byte:"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.pluginConfig") && e.contains("max_body_byte")),
        "{errors:?}"
    );
    // A value outside an enum.
    let errors = check_file(&text.replace("phase: UNSPECIFIED_PHASE", "phase: LAST"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.phase: `LAST` is not one of")),
        "{errors:?}"
    );
    // A mistyped value.
    let errors = check_file(&text.replace("priority: -1000", "priority: low"));
    assert!(
        errors.iter().any(|e| e.contains("spec.priority")),
        "{errors:?}"
    );
}

fn read(path: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(istio_dir().join(path)).unwrap()).unwrap()
}

#[test]
fn the_mesh_keeps_every_label_and_metric_of_the_filter() {
    let mesh = read("mesh-config.yaml");
    let proxy = &mesh["spec"]["meshConfig"]["defaultConfig"];
    let tags: Vec<&str> = proxy["extraStatTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for tag in crate::metrics::TAGS {
        assert!(tags.contains(&tag), "extraStatTags lacks `{tag}`");
    }
    let regexps = proxy["proxyStatsMatcher"]["inclusionRegexps"]
        .as_array()
        .unwrap();
    for metric in [
        "aegis_decision_total",
        "aegis_policy_violation_total",
        "aegis_budget_remaining",
        "aegis_request_latency_ms",
    ] {
        // Envoy matches the stat's full name, labels still in it.
        let name = format!("wasmcustom.agent=.=a;.;decision=.=allow;.;{metric}");
        assert!(
            regexps.iter().any(
                |r| regex::Regex::new(&format!("^(?:{})$", r.as_str().unwrap()))
                    .unwrap()
                    .is_match(&name)
            ),
            "no inclusionRegexps keeps {name}"
        );
    }
    assert_eq!(
        mesh["spec"]["meshConfig"]["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );
}

#[test]
fn the_control_plane_runs_unprivileged_with_its_probes() {
    let d = read("control-plane/deployment.yaml");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    assert!(c["image"].as_str().unwrap().contains("@sha256:"));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"serve"));
    let listen = args.iter().position(|a| *a == "--listen").unwrap();
    assert_eq!(args[listen + 1], "0.0.0.0:9000");
    assert!(args.contains(&"--public-url"));
    // The store's URL comes from the Secret; every writable path is a volume.
    assert_eq!(c["env"][0]["name"], "AEGIS_DB");
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        read("control-plane/secret.yaml")["metadata"]["name"]
    );
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/var/lib/aegis"), "{mounts:?}");
    let service = read("control-plane/service.yaml");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        c["ports"][0]["name"]
    );
    assert_eq!(
        service["spec"]["selector"],
        d["spec"]["template"]["metadata"]["labels"]
    );
}
