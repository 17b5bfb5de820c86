//! Pushing an [`Image`] to a registry with the OCI distribution API: each
//! blob (skipped when the registry has it), then the manifest, by tag or
//! by digest. The registry's own digest of the manifest must be ours.
//!
//! Authentication follows the registries' challenge: a `401` with
//! `WWW-Authenticate: Basic` is answered with the credentials of the auth
//! file; `Bearer realm=…,service=…,scope=…` with a token fetched from the
//! realm (with those credentials, or anonymously). The auth file is the
//! one `docker login` and `skopeo login` write.

use super::oci::{Blob, Image, MANIFEST_MEDIA_TYPE};
use crate::client::q;
use base64::Engine as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `registry/repository[:tag][@sha256:…]`, with an optional `oci://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, as written.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("image reference `{reference}`: {why}")]
    Reference {
        reference: String,
        why: &'static str,
    },
    #[error("`{reference}` names digest {named}, but the image is {actual}")]
    DigestMismatch {
        reference: String,
        named: String,
        actual: String,
    },
    #[error("cannot reach {url}: {why}")]
    Transport { url: String, why: String },
    #[error("{what}: answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{0}")]
    Auth(String),
    #[error("the registry stored the manifest as {stored}, not {ours}")]
    StoredDigest { stored: String, ours: String },
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// Reads `[oci://]host[:port]/repo/path[:tag][@sha256:<64 hex>]`. The
    /// registry host must be written out (`docker.io/…` for Docker Hub):
    /// a bare `name:tag` would leave the reader to guess where the policy
    /// goes.
    pub fn parse(text: &str) -> Result<Self, PushError> {
        let bad = |why| PushError::Reference {
            reference: text.to_string(),
            why,
        };
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        let (rest, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or(bad("only `@sha256:` digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad("a digest is `sha256:` and 64 lowercase hex digits"));
                }
                (name, Some(digest.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = rest.split_once('/').ok_or(bad(
            "name the registry host, e.g. `registry.example.com/aegis/filter:v1`",
        ))?;
        let is_host = registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !is_host || registry.is_empty() {
            return Err(bad(
                "the first part must be a registry host (with a dot or a port, or `localhost`), e.g. `docker.io/org/aegis-filter`",
            ));
        }
        // A tag follows the last `:` after the last `/`.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                    && part
                        .as_bytes()
                        .first()
                        .is_some_and(u8::is_ascii_alphanumeric)
            });
        if !repo_ok {
            return Err(bad(
                "a repository is lowercase letters, digits, `.`, `_` and `-`, in `/`-separated parts",
            ));
        }
        if let Some(tag) = &tag {
            let ok = tag.len() <= 128
                && tag
                    .as_bytes()
                    .first()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(bad("a tag is up to 128 letters, digits, `.`, `_` and `-`"));
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The host that serves the API: Docker Hub's names are `docker.io`
    /// for people and `registry-1.docker.io` for clients.
    fn api_host(&self) -> &str {
        match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        }
    }
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Plain HTTP instead of HTTPS (a registry on loopback or in a lab).
    pub plain_http: bool,
    /// The auth file to read; default: the first that exists of
    /// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `registry/repository@sha256:…`: what Istio's `url` pins.
    pub pinned: String,
    /// Blobs sent, and blobs the registry already had.
    pub uploaded: usize,
    pub present: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

/// Pushes `image` to `reference`: by its tag if it has one, else by digest
/// only (nothing moves a tag).
pub fn push(image: &Image, reference: &Reference, opts: &PushOptions) -> Result<Pushed, PushError> {
    if let Some(named) = &reference.digest {
        if *named != image.manifest.digest {
            return Err(PushError::DigestMismatch {
                reference: reference.to_string(),
                named: named.clone(),
                actual: image.manifest.digest.clone(),
            });
        }
    }
    let credentials = credentials_for(reference, opts.auth_file.as_deref())?;
    let scheme = if opts.plain_http { "http" } else { "https" };
    let mut client = Client {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirects(0)
            .build(),
        base: format!("{scheme}://{}", reference.api_host()),
        repository: reference.repository.clone(),
        plain_http: opts.plain_http,
        credentials,
        authorization: None,
    };
    let (mut uploaded, mut present) = (0, 0);
    for blob in [&image.config, &image.layer] {
        if client.has_blob(blob)? {
            present += 1;
        } else {
            client.upload(blob)?;
            uploaded += 1;
        }
    }
    let target = reference
        .tag
        .clone()
        .unwrap_or_else(|| image.manifest.digest.clone());
    let url = format!(
        "{}/v2/{}/manifests/{target}",
        client.base, client.repository
    );
    let what = format!("pushing the manifest to `{reference}`");
    let answer = client.send(
        "PUT",
        &url,
        Some(MANIFEST_MEDIA_TYPE),
        Some(&image.manifest.bytes),
    )?;
    let answer = expect(answer, &[201], &what)?;
    if let Some(stored) = answer.header("docker-content-digest") {
        if stored != image.manifest.digest {
            return Err(PushError::StoredDigest {
                stored: stored.to_string(),
                ours: image.manifest.digest.clone(),
            });
        }
    }
    Ok(Pushed {
        pinned: format!(
            "{}/{}@{}",
            reference.registry, reference.repository, image.manifest.digest
        ),
        uploaded,
        present,
    })
}

struct Client {
    agent: ureq::Agent,
    base: String,
    repository: String,
    plain_http: bool,
    credentials: Option<Credentials>,
    /// The `authorization` header value once a challenge was answered.
    authorization: Option<String>,
}

impl Client {
    fn has_blob(&mut self, blob: &Blob) -> Result<bool, PushError> {
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repository, blob.digest);
        let answer = self.send("HEAD", &url, None, None)?;
        match answer.status() {
            // A registry on object storage answers with a redirect to where
            // the blob is: it has it.
            200 | 302 | 303 | 307 | 308 => Ok(true),
            404 => Ok(false),
            _ => expect(answer, &[], &format!("checking blob {}", blob.digest)).map(|_| false),
        }
    }

    /// A monolithic upload: open a session, then one `PUT` with the bytes
    /// and their digest, which the registry checks.
    fn upload(&mut self, blob: &Blob) -> Result<(), PushError> {
        let what = format!("uploading blob {}", blob.digest);
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.repository);
        let answer = expect(self.send("POST", &url, None, Some(&[]))?, &[202], &what)?;
        let location = answer.header("location").ok_or_else(|| PushError::Status {
            what: what.clone(),
            status: 202,
            detail: " with no `Location` to upload to".into(),
        })?;
        let location = self.absolute(location);
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", blob.digest.replace(':', "%3A"));
        let answer = self.send(
            "PUT",
            &url,
            Some("application/octet-stream"),
            Some(&blob.bytes),
        )?;
        expect(answer, &[201], &what).map(|_| ())
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    /// One request; a `401` is answered once with the challenge's scheme.
    /// Any status comes back as the answer: the caller judges it.
    fn send(
        &mut self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response, PushError> {
        let answer = self.send_once(method, url, content_type, body)?;
        if answer.status() != 401 || self.authorization.is_some() {
            return Ok(answer);
        }
        let challenge = answer.header("www-authenticate").unwrap_or("").to_string();
        self.authorization = Some(self.answer_challenge(&challenge)?);
        self.send_once(method, url, content_type, body)
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response, PushError> {
        let mut request = self.agent.request(method, url);
        if let Some(value) = &self.authorization {
            request = request.set("authorization", value);
        }
        if let Some(value) = content_type {
            request = request.set("content-type", value);
        }
        let result = match body {
            Some(bytes) => request.send_bytes(bytes),
            None => request.call(),
        };
        match result {
            Ok(answer) | Err(ureq::Error::Status(_, answer)) => Ok(answer),
            Err(ureq::Error::Transport(t)) => Err(PushError::Transport {
                url: strip_query(url).to_string(),
                why: t.to_string(),
            }),
        }
    }

    fn answer_challenge(&self, challenge: &str) -> Result<String, PushError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = challenge_params(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    PushError::Auth(format!(
                        "{} asks for a user name and password, and no auth file has an entry for it (`docker login` or `skopeo login` writes one; or pass --authfile)",
                        self.base
                    ))
                })?;
                Ok(basic(c))
            }
            "bearer" => self.fetch_token(&params),
            _ => Err(PushError::Auth(format!(
                "{} refused the request (401) with no challenge this client answers: `{challenge}`",
                self.base
            ))),
        }
    }

    /// The token flow of the distribution spec: `GET realm?service&scope`,
    /// with the credentials when there are some; the answer's `token` (or
    /// `access_token`) is the bearer.
    fn fetch_token(&self, params: &[(String, String)]) -> Result<String, PushError> {
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let realm = get("realm").ok_or_else(|| {
            PushError::Auth(format!("{}: a bearer challenge with no realm", self.base))
        })?;
        // Credentials go to a realm over TLS only (or to a plain-HTTP lab
        // registry the user chose).
        let tls = realm.starts_with("https://");
        if !(tls || self.plain_http && realm.starts_with("http://")) {
            return Err(PushError::Auth(format!(
                "the token realm `{realm}` is not an https URL"
            )));
        }
        // The scope of a push, whatever the first challenge named: the
        // first request is a `HEAD`, for which registries ask `pull` only,
        // and a token for that is refused at the upload.
        let scope = format!("repository:{}:pull,push", self.repository);
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            q(&scope)
        );
        if let Some(service) = get("service") {
            url.push_str(&format!("&service={}", q(service)));
        }
        let mut request = self.agent.get(&url);
        if let Some(c) = &self.credentials {
            request = request.set("authorization", &basic(c));
        }
        let answer = match request.call() {
            Ok(answer) => answer,
            Err(ureq::Error::Status(status, answer)) => {
                return Err(PushError::Status {
                    what: format!("asking `{realm}` for a token"),
                    status,
                    detail: detail(answer),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(PushError::Transport {
                    url: realm.to_string(),
                    why: t.to_string(),
                })
            }
        };
        let body: serde_json::Value = answer
            .into_json()
            .map_err(|e| PushError::Auth(format!("the token from `{realm}` is not JSON: {e}")))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(serde_json::Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| PushError::Auth(format!("`{realm}` answered with no token")))
    }
}

fn basic(c: &Credentials) -> String {
    let pair = format!("{}:{}", c.user, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn strip_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

fn expect(answer: ureq::Response, ok: &[u16], what: &str) -> Result<ureq::Response, PushError> {
    let status = answer.status();
    if ok.contains(&status) {
        return Ok(answer);
    }
    Err(PushError::Status {
        what: what.to_string(),
        status,
        detail: detail(answer),
    })
}

/// The registry's own words: `errors[].code` and `message` of the
/// distribution spec's error body, when it sent one.
fn detail(answer: ureq::Response) -> String {
    let body = answer.into_string().unwrap_or_default();
    let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
    let words: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(serde_json::Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let code = e
                        .get("code")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    let message = e
                        .get("message")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    format!("{code}: {message}")
                })
                .collect()
        })
        .unwrap_or_default();
    if words.is_empty() {
        String::new()
    } else {
        format!(" ({})", words.join("; "))
    }
}

/// `key="value", key=value` pairs of a challenge; quoted values may hold
/// commas (`scope="repository:a:pull,push"`).
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((value, next)) => (value.to_string(), next),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((value, next)) => (value.trim().to_string(), next),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

/// The auth file to read: the one given, or the first that exists of the
/// places `skopeo` and `docker` keep theirs.
fn auth_file(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    let env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    [
        env("REGISTRY_AUTH_FILE"),
        env("XDG_RUNTIME_DIR").map(|d| d.join("containers").join("auth.json")),
        env("DOCKER_CONFIG").map(|d| d.join("config.json")),
        env("HOME").map(|d| d.join(".docker").join("config.json")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

/// The credentials for the reference's registry in the auth file: an
/// `auths` entry keyed by the host (with or without a scheme and path),
/// holding `auth` (base64 of `user:password`) or `username`/`password`.
fn credentials_for(
    reference: &Reference,
    given: Option<&Path>,
) -> Result<Option<Credentials>, PushError> {
    let Some(path) = auth_file(given) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PushError::Auth(format!("cannot read auth file `{}`: {e}", path.display())))?;
    let file: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PushError::Auth(format!("auth file `{}` is not JSON: {e}", path.display())))?;
    let host = |key: &str| -> String {
        let key = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        let host = key.split('/').next().unwrap_or(key);
        match host {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            other => other.to_string(),
        }
    };
    let wanted = host(&reference.registry);
    let Some(entry) = file
        .get("auths")
        .and_then(serde_json::Value::as_object)
        .and_then(|auths| auths.iter().find(|(key, _)| host(key) == wanted))
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
    let bad = |why: &str| {
        PushError::Auth(format!(
            "auth file `{}`, entry `{wanted}`: {why}",
            path.display()
        ))
    };
    if let Some(encoded) = field("auth").filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| bad("`auth` is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("`auth` is not `user:password`"))?;
        return Ok(Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        }));
    }
    match (field("username"), field("password")) {
        (Some(user), Some(password)) => Ok(Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })),
        _ if field("identitytoken").is_some() => Err(bad(
            "it holds an identity token, which this client does not exchange; log in with a user name and password",
        )),
        _ => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_as_registries_write_them() {
        let r = Reference::parse("oci://localhost:5000/aegis/filter:v3").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "aegis/filter");
        assert_eq!(r.tag.as_deref(), Some("v3"));
        assert_eq!(r.to_string(), "localhost:5000/aegis/filter:v3");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/acme/aegis-filter@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        let r = Reference::parse("docker.io/acme/aegis").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn references_that_leave_something_to_guess_are_refused() {
        for bad in [
            "aegis-filter:v1",
            "acme/aegis-filter",
            "localhost:5000/Aegis",
            "localhost:5000/a//b",
            "localhost:5000/a:bad tag",
            "localhost:5000/a@sha256:abc",
            "localhost:5000/a@md5:0123",
            "localhost:5000/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenge_parameters_keep_commas_inside_quotes() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        assert_eq!(
            q("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn credentials_come_from_the_entry_of_the_registry() {
        let dir = std::env::temp_dir().join(format!("aegis-authfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"localhost:5000":{"username":"ci","password":"pw"}}}"#,
        )
        .unwrap();
        let hub = Reference::parse("docker.io/acme/aegis").unwrap();
        let c = credentials_for(&hub, Some(&path)).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("hub", "secret"));
        let local = Reference::parse("localhost:5000/aegis").unwrap();
        let c = credentials_for(&local, Some(&path)).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("ci", "pw"));
        let other = Reference::parse("ghcr.io/acme/aegis").unwrap();
        assert_eq!(credentials_for(&other, Some(&path)).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
