//! `aegis package` against a real registry: Debian's `docker-registry`
//! (the CNCF distribution server) started by the test on loopback, and
//! `skopeo` as the independent client that pulls what `aegis` pushed.
//! Both come from Debian's packages (`scripts/test.sh` installs them).
//!
//! What it shows: the image in the registry is the one `aegis package`
//! wrote (manifest bytes and digest); the module inside it is byte for
//! byte the blob, and its signatures still verify with `aegis verify`; a
//! layer changed in the registry's storage, or in the layout on disk, is
//! caught by the digest check of the client that pulls it; a registry
//! asking for a password gets the one `skopeo login` wrote, and a wrong
//! one is refused in words.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

fn aegis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run aegis")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("`skopeo` not found: install Debian's `skopeo` package (scripts/test.sh does)")
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A distribution server on a free loopback port, its storage in `dir`;
/// with `htpasswd`, it asks for basic authentication.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let auth = htpasswd.map_or(String::new(), |p| {
            format!(
                "auth:\n  htpasswd:\n    realm: aegis-test\n    path: {}\n",
                p.display()
            )
        });
        Registry::start_with(dir, &auth)
    }

    /// With `auth`, the `auth:` section of its configuration.
    fn start_with(dir: &Path, auth: &str) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} not found: install Debian's `docker-registry` package (scripts/test.sh does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(dir).unwrap();
        let storage = dir.join("storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth}http:\n  addr: 127.0.0.1:{port}\n  secret: aegis-test\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry {
            child,
            port,
            storage,
        };
        registry.wait_ready(dir);
        registry
    }

    fn wait_ready(&mut self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("docker-registry did not listen on {} in 20 s", self.port);
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps a blob's bytes (the filesystem driver's
    /// layout).
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed blob of the finance policies, its key pair beside it.
fn blob(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("signer");
    ok(&aegis(&["keygen", "--out", prefix.to_str().unwrap()]));
    let wasm = dir.join("filter.wasm");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/finance");
    ok(&aegis(&[
        "build",
        policies.to_str().unwrap(),
        "--key",
        dir.join("signer.key").to_str().unwrap(),
        "-o",
        wasm.to_str().unwrap(),
    ]));
    (wasm, dir.join("signer.pub"))
}

fn package(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["package"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    serde_json::from_str(&ok(&aegis(&all))).unwrap()
}

/// `aegis package WASM -o DIR/layout --push REFERENCE --plain-http`, with
/// `--authfile` when given.
fn push(dir: &Path, wasm: &Path, reference: &str, authfile: Option<&Path>) -> Output {
    let layout = dir.join("layout");
    let mut args = vec![
        "package",
        wasm.to_str().unwrap(),
        "-o",
        layout.to_str().unwrap(),
        "--push",
        reference,
        "--plain-http",
    ];
    if let Some(file) = authfile {
        args.extend_from_slice(&["--authfile", file.to_str().unwrap()]);
    }
    aegis(&args)
}

/// The one file of a tar.gz layer, by name.
fn file_in_layer(layer: &[u8], name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("layer.tar.gz");
    std::fs::write(&gz, layer).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&gz)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "the layer is not a tar.gz GNU tar reads");
    std::fs::read(dir.path().join(name)).unwrap()
}

#[test]
fn pushed_image_comes_back_byte_for_byte_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (wasm, public) = blob(dir.path());
    let module = std::fs::read(&wasm).unwrap();
    let registry = Registry::start(&dir.path().join("registry"), None);
    let layout = dir.path().join("layout");
    let reference = format!("{}/aegis/filter:v1", registry.host());
    let out = package(&[
        wasm.to_str().unwrap(),
        "-o",
        layout.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
        "--push",
        &reference,
        "--plain-http",
    ]);
    let digest = out["digest"].as_str().unwrap().to_string();
    assert_eq!(out["sha256"], digest.trim_start_matches("sha256:"));
    assert_eq!(
        out["pushed"],
        format!("{}/aegis/filter@{digest}", registry.host()).as_str()
    );

    // The same module packaged again, elsewhere, is the same image.
    let again = package(&[
        wasm.to_str().unwrap(),
        "-o",
        dir.path().join("again").to_str().unwrap(),
    ]);
    assert_eq!(again["digest"], digest.as_str());

    // skopeo reads the layout and the registry, and both name our digest.
    for target in [
        format!("oci:{}:latest", layout.display()),
        format!("docker://{reference}"),
    ] {
        let inspect = skopeo(&["inspect", "--tls-verify=false", &target]);
        let seen: serde_json::Value = serde_json::from_str(&ok(&inspect)).unwrap();
        assert_eq!(seen["Digest"], digest.as_str(), "{target}");
    }

    // Pull by digest into a plain directory: the manifest is the bytes we
    // wrote, its hash is the digest, and the layer's plugin.wasm is the
    // blob, whose signatures still verify.
    let pulled = dir.path().join("pulled");
    ok(&skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/aegis/filter@{digest}", registry.host()),
        &format!("dir:{}", pulled.display()),
    ]));
    let manifest = std::fs::read(pulled.join("manifest.json")).unwrap();
    assert_eq!(sha256(&manifest), digest);
    let ours = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(manifest, ours);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["annotations"]["module.wasm.image/variant"], "compat");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap();
    let layer = std::fs::read(pulled.join(layer_digest.trim_start_matches("sha256:"))).unwrap();
    assert_eq!(sha256(&layer), layer_digest);
    let plugin = file_in_layer(&layer, "plugin.wasm");
    assert_eq!(plugin, module, "the module in the image is the blob");
    let plugin_path = dir.path().join("plugin.wasm");
    std::fs::write(&plugin_path, &plugin).unwrap();
    let verified = ok(&aegis(&[
        "verify",
        plugin_path.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ]));
    assert!(verified.starts_with("ok: "), "{verified}");

    // Pushing the same image again sends nothing new and moves nothing.
    let out = ok(&aegis(&[
        "package",
        wasm.to_str().unwrap(),
        "-o",
        layout.to_str().unwrap(),
        "--push",
        &reference,
        "--plain-http",
    ]));
    assert!(out.contains("(0 blobs sent, 2 already there)"), "{out}");
}

#[test]
fn a_tampered_layer_is_caught_by_the_digest_check() {
    let dir = tempfile::tempdir().unwrap();
    let (wasm, _) = blob(dir.path());
    let registry = Registry::start(&dir.path().join("registry"), None);
    let layout = dir.path().join("layout");
    // By digest only: no tag.
    let out = package(&[
        wasm.to_str().unwrap(),
        "-o",
        layout.to_str().unwrap(),
        "--push",
        &format!("{}/aegis/filter", registry.host()),
        "--plain-http",
    ]);
    let digest = out["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    };
    let pinned = format!("docker://{}/aegis/filter@{digest}", registry.host());

    // Untouched, it pulls.
    ok(&skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &pinned,
        &format!("dir:{}", dir.path().join("good").display()),
    ]));

    // One bit changed in the registry's storage.
    flip(&registry.blob_path(&layer_digest));
    let bad = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &pinned,
        &format!("dir:{}", dir.path().join("bad").display()),
    ]);
    assert!(!bad.status.success(), "a tampered layer was pulled");
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("Digest did not match"), "{why}");

    // One bit changed in the layout on disk, before a push by skopeo.
    flip(
        &layout
            .join("blobs/sha256")
            .join(layer_digest.trim_start_matches("sha256:")),
    );
    let bad = skopeo(&[
        "copy",
        &format!("oci:{}:latest", layout.display()),
        &format!("dir:{}", dir.path().join("bad2").display()),
    ]);
    assert!(!bad.status.success(), "a tampered layout layer was copied");
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("Digest did not match"), "{why}");
}

#[test]
fn a_registry_that_asks_for_a_password_gets_the_one_skopeo_login_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (wasm, _) = blob(dir.path());
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret-pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("ci:{hash}\n")).unwrap();
    let registry = Registry::start(&dir.path().join("registry"), Some(&htpasswd));
    let reference = format!("{}/aegis/filter:v2", registry.host());

    // No credentials: refused, and the message says how to log in.
    let out = push(dir.path(), &wasm, &reference, None);
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("asks for a user name and password"), "{why}");
    assert!(why.contains("skopeo login"), "{why}");

    // A wrong password: the registry's 401, in words.
    let wrong = dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"Y2k6bm90LWl0"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let out = push(dir.path(), &wasm, &reference, Some(&wrong));
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("answered 401"), "{why}");

    // The auth file `skopeo login` writes.
    let auth = dir.path().join("auth.json");
    ok(&skopeo(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        auth.to_str().unwrap(),
        "-u",
        "ci",
        "-p",
        "s3cret-pw",
        &registry.host(),
    ]));
    let out = ok(&push(dir.path(), &wasm, &reference, Some(&auth)));
    assert!(out.contains("(2 blobs sent, 0 already there)"), "{out}");
    let inspect = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--authfile",
        auth.to_str().unwrap(),
        &format!("docker://{reference}"),
    ]);
    let seen: serde_json::Value = serde_json::from_str(&ok(&inspect)).unwrap();
    assert!(out.contains(seen["Digest"].as_str().unwrap()), "{out}");
}

#[test]
fn what_is_not_a_policy_blob_or_names_another_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A module with no signature and no bundle.
    let bare = dir.path().join("bare.wasm");
    std::fs::write(&bare, b"\0asm\x01\0\0\0").unwrap();
    let out = aegis(&["package", bare.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("carries no module signature"));
    let text = dir.path().join("policy.yaml");
    std::fs::write(&text, "agents: []\n").unwrap();
    let out = aegis(&["package", text.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly module"));

    // Signed by someone else than the key asked for.
    let (wasm, _) = blob(dir.path());
    let other = dir.path().join("other");
    ok(&aegis(&["keygen", "--out", other.to_str().unwrap()]));
    let out = aegis(&[
        "package",
        wasm.to_str().unwrap(),
        "--pubkey",
        dir.path().join("other.pub").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("module signature"));

    // A reference pinned to another digest is refused before anything is
    // sent (no registry listens there).
    let zeros = "0".repeat(64);
    let out = aegis(&[
        "package",
        wasm.to_str().unwrap(),
        "--push",
        &format!("127.0.0.1:9/aegis/filter@sha256:{zeros}"),
        "--plain-http",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("names digest sha256:000"), "{why}");
    // And a reference with no registry host, in words.
    let out = aegis(&[
        "package",
        wasm.to_str().unwrap(),
        "--push",
        "aegis-filter:v1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("registry host"));
}

/// A token service as the distribution spec describes it, for a registry
/// configured with `auth: token`: it answers `GET /token?scope&service`
/// for `ci:s3cret-pw` (Basic) with an ES256 JWT whose `x5c` is a
/// self-signed certificate the registry trusts (`rootcertbundle`), granting
/// what the scope asks. Key, certificate and signatures come from the
/// `openssl` command line. It records each scope asked for.
struct TokenService {
    port: u16,
    scopes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An ECDSA signature from DER (`SEQUENCE { INTEGER r, INTEGER s }`) to
/// JWS's 64 bytes `r || s`.
fn ecdsa_raw(der: &[u8]) -> Vec<u8> {
    let mut at = if der[1] & 0x80 != 0 {
        2 + usize::from(der[1] & 0x7f)
    } else {
        2
    };
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[at], 2, "an INTEGER");
        let len = usize::from(der[at + 1]);
        let value = &der[at + 2..at + 2 + len];
        let value: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
        out.extend(std::iter::repeat_n(0u8, 32 - value.len()));
        out.extend(value);
        at += 2 + len;
    }
    out
}

impl TokenService {
    fn start(dir: &Path) -> (TokenService, PathBuf) {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=aegis-test-token",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("`openssl` not found");
        assert!(st.success());
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(der)
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let scopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = scopes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                TokenService::answer(stream, &key, &x5c, &seen);
            }
        });
        (TokenService { port, scopes }, cert)
    }

    fn answer(
        mut stream: std::net::TcpStream,
        key: &Path,
        x5c: &str,
        seen: &std::sync::Mutex<Vec<String>>,
    ) {
        use std::io::{BufRead, BufReader, Write};
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            lines.push(line.trim_end().to_string());
        }
        let target = lines
            .first()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let query: std::collections::HashMap<String, String> = target
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let authorized = lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("authorization: Basic Y2k6czNjcmV0LXB3"));
        let scope = query.get("scope").cloned().unwrap_or_default();
        seen.lock().unwrap().push(scope.clone());
        let reply = if authorized {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": "aegis-test-issuer", "sub": "ci", "aud": query.get("service"),
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", seen.lock().unwrap().len()),
                "access": [{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
            });
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let mut child = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(signing_input.as_bytes())
                .unwrap();
            let der = child.wait_with_output().unwrap().stdout;
            let token = format!("{signing_input}.{}", b64url(&ecdsa_raw(&der)));
            let body = serde_json::json!({"token": token}).to_string();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user or password"}]}"#;
            format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let _ = stream.write_all(reply.as_bytes());
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn a_registry_with_token_auth_gets_a_push_token_from_its_realm() {
    let dir = tempfile::tempdir().unwrap();
    let (wasm, _) = blob(dir.path());
    let (tokens, cert) = TokenService::start(dir.path());
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: aegis-test-registry\n    issuer: aegis-test-issuer\n    rootcertbundle: {}\n",
        tokens.port,
        cert.display()
    );
    let registry = Registry::start_with(&dir.path().join("registry"), &auth);
    let reference = format!("{}/aegis/filter:v3", registry.host());

    // Anonymous: the token service refuses, and says so.
    let out = push(dir.path(), &wasm, &reference, None);
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("for a token: answered 401"), "{why}");
    assert!(why.contains("wrong user or password"), "{why}");

    let auth_file = dir.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"username":"ci","password":"s3cret-pw"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let out = ok(&push(dir.path(), &wasm, &reference, Some(&auth_file)));
    assert!(out.contains("(2 blobs sent, 0 already there)"), "{out}");
    // One token, asked for the scope of a push.
    assert!(tokens
        .scopes
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "repository:aegis/filter:pull,push"));

    // skopeo goes through the same token service and finds the image.
    let inspect = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "ci:s3cret-pw",
        &format!("docker://{reference}"),
    ]);
    let seen: serde_json::Value = serde_json::from_str(&ok(&inspect)).unwrap();
    assert!(out.contains(seen["Digest"].as_str().unwrap()), "{out}");
}
