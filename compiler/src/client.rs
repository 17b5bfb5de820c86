//! The `aegis` commands that talk to a running `aegis serve`: where it is
//! (`--server` / `AEGIS_SERVER`), the token (`--token` / `AEGIS_TOKEN`),
//! and the API's errors turned into one line for a person.

use crate::cli::Error;
use serde_json::Value;
use std::time::Duration;

/// Where the control plane is and who we are to it.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The control plane's URL.
    #[arg(long, env = "AEGIS_SERVER", default_value = "http://127.0.0.1:9000")]
    pub server: String,
    /// A service token (`aegis admin token`).
    #[arg(long, env = "AEGIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(r: &Remote) -> Client {
        Client {
            base: r.server.trim_end_matches('/').to_owned(),
            token: r.token.clone(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(90))
                .build(),
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.set("authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, Error> {
        self.finish(self.request("GET", path).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.finish(self.request("POST", path).send_json(body))
    }

    pub fn post_bytes(&self, path: &str, body: &[u8]) -> Result<Value, Error> {
        self.finish(
            self.request("POST", path)
                .set("content-type", "application/octet-stream")
                .send_bytes(body),
        )
    }

    fn finish(&self, r: Result<ureq::Response, ureq::Error>) -> Result<Value, Error> {
        match r {
            Ok(resp) => resp.into_json::<Value>().map_err(|e| {
                Error::failed(format_args!(
                    "`{}` answered with something that is not JSON: {e}",
                    self.base
                ))
            }),
            Err(ureq::Error::Status(status, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                let parsed: Option<Value> = serde_json::from_str(&body).ok();
                let err = parsed.as_ref().and_then(|v| v.get("error"));
                let message = err
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map_or_else(|| body.trim().to_owned(), str::to_owned);
                let code = err
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let line = format!("{status} {code}: {message}");
                // Our request or our credentials are wrong: exit 2; the
                // service said no to a valid request: exit 1.
                Err(if matches!(status, 400 | 401 | 404 | 413 | 415) {
                    Error::input(line)
                } else {
                    Error::failed(line)
                })
            }
            Err(e) => Err(Error::input(format_args!(
                "cannot reach the control plane at `{}`: {e} (set --server or AEGIS_SERVER)",
                self.base
            ))),
        }
    }
}

/// The array under `key` of an API answer (`{"approvals": [...]}`), empty
/// when the answer has none.
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string under `key` of an API answer, `-` when it has none (how the
/// commands print a gap).
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// `path` (which has its `?` already) with `&key=value` for each value
/// given, percent-encoded.
pub fn with_query(mut path: String, params: &[(&str, Option<&str>)]) -> String {
    for (key, value) in params {
        if let Some(value) = value {
            path.push_str(&format!("&{key}={}", q(value)));
        }
    }
    path
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
