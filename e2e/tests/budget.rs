//! Budgets end to end: one real `aegis serve` (SQLite) and TWO Envoy
//! processes, each with its own shared data (so its own budget leases),
//! both with the filter configured with that control plane, and the
//! recording upstream behind them.
//!
//! The agent of `e2e/tests/fixtures/budget/policies` has `daily_usd: 20`
//! and a search rule with `cost_usd: 1`: whatever the order, the proxy or
//! the concurrency, exactly 20 searches reach the upstream and are
//! answered 200; every other one is a 429 `deny` with `retry-after` whose
//! reason names the budget; never a 21st. The control plane's books
//! (`aegis budgets show`) say spent 20 once the proxies' leases are
//! settled (every `settle_ms`, 200 ms here; polled, bounded). Leases
//! cover `lease_calls: 5` calls, so each proxy goes through several.
//!
//! Also: the control plane killed and restarted on the same store between
//! calls (calls spent from a lease while it was down are settled after,
//! and the total is still exactly 20), and a rule without a cost that
//! never calls out (it passes while the control plane is down).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aegis_e2e::blob::fresh_key;
use aegis_e2e::client::{send, Req, Resp};
use aegis_e2e::config::{Gateway, Listener};
use aegis_e2e::control::{self, ControlPlane, CpListener};
use aegis_e2e::corpus::{self, Folder};
use aegis_e2e::upstream::{EchoServer, ECHO_HEADER};
use aegis_e2e::{prom, repo_root};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const AGENT: &str = "budget-agent";
const HOST: &str = "api.search.example";
const SEARCH: &str = "/v1/search";
const PING: &str = "/v1/ping";
/// `budget.daily_usd` of the fixture, in calls of `cost_usd: 1`.
const LIMIT: usize = 20;
const EXHAUSTED: &str = "the agent's daily budget of 20 USD is spent; it resets at 00:00 UTC";
/// How long the control plane may take to show what the proxies spent
/// (they settle every 200 ms).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

fn fixture() -> PathBuf {
    repo_root()
        .join("e2e")
        .join("tests")
        .join("fixtures")
        .join("budget")
        .join("policies")
}

/// What came of one paid call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paid {
    Allowed,
    Exhausted,
    /// 503: the call needed a lease and the control plane was down.
    Unavailable,
}

/// A control plane, two Envoys whose filters call it, the upstream.
struct World {
    cp: ControlPlane,
    gws: Vec<Gateway>,
    upstream: EchoServer,
    token: String,
    viewer: String,
    label: &'static str,
    next: AtomicUsize,
    /// Paid calls answered 200 so far, all proxies.
    allowed: AtomicUsize,
    /// Paid calls answered 200, by proxy.
    by_proxy: Mutex<[usize; 2]>,
    _dir: tempfile::TempDir,
}

fn world(label: &'static str) -> Option<World> {
    let envoy = common::envoy_or_skip(label)?;
    let dir = aegis_e2e::workdir(label).unwrap();
    let folder = Folder {
        name: "budget".into(),
        label: "e2e/tests/fixtures/budget/policies".into(),
        dir: fixture(),
        case_files: Vec::new(),
    };
    let policy_key = fresh_key(dir.path(), "policy").unwrap();
    let token_key = fresh_key(dir.path(), "tokens").unwrap();
    let p = corpus::prepare(&folder, dir.path(), &policy_key, &token_key).unwrap();
    // The control plane's budgets come from the same policies.
    let cp = ControlPlane::start(&dir.path().join("control"), &[fixture()]).unwrap();
    let viewer = cp.token("viewer", "default", "finops").unwrap();
    let upstream = EchoServer::start().unwrap();
    let mut gws = Vec::new();
    for name in ["edge-a", "edge-b"] {
        let mut overrides = serde_json::Map::new();
        overrides.insert(
            "token".into(),
            cp.token("gateway", "default", name).unwrap().into(),
        );
        overrides.insert("lease_calls".into(), 5.into());
        overrides.insert("settle_ms".into(), 200.into());
        // Bundles are not what this test is about.
        overrides.insert("bundle_poll_ms".into(), 0.into());
        let listener = CpListener {
            listener: Listener {
                name: name.into(),
                blob: p.built.path.clone(),
                trusted_key: p.built.trusted_key.clone(),
                max_body_bytes: None,
                filter_state: None,
            },
            control_plane: overrides,
        };
        // Each Envoy in its own folder: its access and own logs.
        let wd = dir.path().join(name);
        std::fs::create_dir_all(&wd).unwrap();
        gws.push(
            control::start_gateway(&envoy, &wd, upstream.port(), cp.port(), &[listener]).unwrap(),
        );
    }
    let token = p.token(AGENT, None);
    Some(World {
        cp,
        gws,
        upstream,
        token,
        viewer,
        label,
        next: AtomicUsize::new(0),
        allowed: AtomicUsize::new(0),
        by_proxy: Mutex::new([0, 0]),
        _dir: dir,
    })
}

impl World {
    fn req(&self, path: &str) -> Req {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        Req::form_post(
            HOST,
            path,
            &format!("{}-{n}", self.label),
            &self.token,
            &format!("q=call-{n}"),
        )
    }

    /// One paid search through proxy `gw`, judged: 200 from the upstream
    /// (never more than [`LIMIT`] of them), or a 429 that names the budget,
    /// or (`down_ok`) a 503 because the control plane is down.
    fn search(&self, gw: usize, down_ok: bool) -> Paid {
        let req = self.req(SEARCH);
        let resp = send(self.gws[gw].ports[0], &req).unwrap();
        match resp.status {
            200 => {
                assert_eq!(resp.header(ECHO_HEADER), Some("1"), "{}", resp.text());
                let n = self.allowed.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(
                    n <= LIMIT,
                    "paid call {n} allowed with a budget of {LIMIT} (proxy {gw}): {}",
                    resp.text()
                );
                self.by_proxy.lock().unwrap()[gw] += 1;
                Paid::Allowed
            }
            429 => {
                exhausted(&resp);
                Paid::Exhausted
            }
            503 if down_ok => {
                assert_eq!(resp.header("x-aegis-decision"), Some("deny"));
                let j = resp.json().unwrap();
                let reason = j["reason"].as_str().unwrap();
                assert!(
                    reason.starts_with(
                        "the budget could not be checked with the aegis control plane"
                    ),
                    "{reason}"
                );
                Paid::Unavailable
            }
            s => panic!("paid call through proxy {gw}: status {s}: {}", resp.text()),
        }
    }

    /// A free call through proxy `gw`: forwarded.
    fn ping(&self, gw: usize) {
        let req = self.req(PING);
        let resp = send(self.gws[gw].ports[0], &req).unwrap();
        assert_eq!(
            resp.status,
            200,
            "free call via proxy {gw}: {}",
            resp.text()
        );
        assert_eq!(resp.header(ECHO_HEADER), Some("1"));
    }

    /// `aegis_budget_remaining{agent}` of proxy `gw`: micro-dollars.
    fn gauge(&self, gw: usize) -> f64 {
        let text = self.gws[gw].envoy.prometheus().unwrap();
        let samples = prom::parse(&text);
        let found: Vec<f64> = prom::named(&samples, "aegis_budget_remaining")
            .iter()
            .filter(|s| s.labels.get("agent").map(String::as_str) == Some(AGENT))
            .map(|s| s.value)
            .collect();
        assert_eq!(found.len(), 1, "proxy {gw}: {found:?}");
        found[0]
    }

    /// Paid calls that reached the upstream.
    fn upstream_paid(&self) -> usize {
        self.upstream
            .requests()
            .iter()
            .filter(|r| r.path == SEARCH)
            .count()
    }

    /// `GET /v1/budgets` for the agent: `(spent, reserved, remaining)`.
    fn books(&self) -> (f64, f64, f64) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let url = format!("{}/v1/budgets?tenant=default&agent={AGENT}", self.cp.url());
        let mut r = agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.viewer))
            .call()
            .unwrap();
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(r.status(), 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let a = &v["agents"][0];
        assert_eq!(a["limit_usd"], 20.0, "{v}");
        (
            a["spent_usd"].as_f64().unwrap(),
            a["reserved_usd"].as_f64().unwrap(),
            a["remaining_usd"].as_f64().unwrap(),
        )
    }

    /// Sends paid calls, one to each proxy a round, until the control
    /// plane's books show the whole budget spent and nothing reserved;
    /// then both proxies must refuse. A proxy may answer 429 while budget
    /// is parked in a lease the other proxy (or one of its workers) holds
    /// or is giving back: the rounds go on until that is settled.
    fn spend_the_rest(&self) {
        let started = Instant::now();
        let mut rounds = 0;
        loop {
            let (spent, reserved, remaining) = self.books();
            if spent == LIMIT as f64 && reserved == 0.0 {
                break;
            }
            assert!(
                started.elapsed() < SETTLE_TIMEOUT,
                "after {rounds} rounds the books still say spent {spent}, reserved {reserved}, \
                 remaining {remaining}; {} paid calls allowed",
                self.allowed.load(Ordering::SeqCst)
            );
            for gw in 0..2 {
                self.search(gw, false);
            }
            rounds += 1;
        }
        for gw in 0..2 {
            assert_eq!(
                self.search(gw, false),
                Paid::Exhausted,
                "proxy {gw} after the budget is spent"
            );
        }
        eprintln!(
            "{}: budget spent after {rounds} closing rounds; allowed by proxy: {:?}",
            self.label,
            self.by_proxy.lock().unwrap()
        );
    }

    /// What a user checks at the end: 20 allowed, 20 at the upstream,
    /// `aegis budgets show` says spent 20, nothing reserved, nothing left.
    fn exactly_the_budget(&self) {
        assert_eq!(self.allowed.load(Ordering::SeqCst), LIMIT);
        assert_eq!(self.upstream_paid(), LIMIT);
        let shown = self
            .cp
            .cli_json(&self.viewer, &["budgets", "show", "--agent", AGENT])
            .unwrap();
        let a = &shown["agents"][0];
        assert_eq!(a["agent"], AGENT, "{shown}");
        assert_eq!(a["spent_usd"], 20.0, "{shown}");
        assert_eq!(a["reserved_usd"], 0.0, "{shown}");
        assert_eq!(a["remaining_usd"], 0.0, "{shown}");
        for gw in 0..2 {
            assert_eq!(self.gauge(gw), 0.0, "aegis_budget_remaining of proxy {gw}");
        }
    }
}

/// A 429 for the spent budget: decision `deny`, the reason names the
/// budget, `retry-after` is the time to the next UTC midnight.
fn exhausted(resp: &Resp) {
    assert_eq!(resp.status, 429, "{}", resp.text());
    assert!(resp.header(ECHO_HEADER).is_none(), "answered upstream");
    assert_eq!(resp.header("x-aegis-decision"), Some("deny"));
    let retry: u64 = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without retry-after: {:?}", resp.headers))
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let to_midnight = 86_400 - now % 86_400;
    assert!(
        retry.abs_diff(to_midnight) <= 5,
        "retry-after {retry}, midnight UTC in {to_midnight} s"
    );
    let j = resp.json().unwrap();
    assert_eq!(j["decision"], "deny", "{j}");
    assert_eq!(j["reason"], EXHAUSTED, "{j}");
    assert_eq!(j["rule"], "budget-agent/metered-search/search#0", "{j}");
}

#[test]
fn two_proxies_allow_exactly_the_daily_budget() {
    let Some(w) = world("budget-two-proxies") else {
        return;
    };

    // The first call leases 5 USD for proxy 0 and spends 1: 15 left at
    // the control plane, 4 in the lease.
    assert_eq!(w.search(0, false), Paid::Allowed);
    assert_eq!(w.gauge(0), 19_000_000.0);

    // Alternating, one call at a time: 4 of the 20 go through, each proxy
    // on its first lease of 5.
    for i in 1..4 {
        assert_eq!(w.search(i % 2, false), Paid::Allowed, "call {i}");
    }

    // Concurrently, four threads per proxy, each until it is refused: the
    // leases run out under them (and the workers of one proxy may race
    // for the next one).
    std::thread::scope(|s| {
        for t in 0..8 {
            let w = &w;
            s.spawn(move || {
                for _ in 0..LIMIT + 5 {
                    if w.search(t % 2, false) == Paid::Exhausted {
                        return;
                    }
                }
                panic!("thread {t}: never refused");
            });
        }
    });
    // Fewer than 20 here is allowed: budget parked in the other proxy's
    // lease, or in a lease one worker took while another did, which its
    // proxy gives back on the next settle.
    eprintln!(
        "budget-two-proxies: {} allowed when each thread had its first 429; books {:?}",
        w.allowed.load(Ordering::SeqCst),
        w.books()
    );
    w.spend_the_rest();
    w.exactly_the_budget();

    // A rule without a cost is not metered: still forwarded by both.
    for gw in 0..2 {
        w.ping(gw);
    }
    let audit = w.cp.audit().unwrap();
    let granted = audit
        .iter()
        .filter(|e| e["kind"] == "lease.granted")
        .count();
    eprintln!("budget-two-proxies: {granted} leases granted");
    assert!(
        granted >= 4,
        "{granted} leases for 20 calls of 5-call leases"
    );
}

#[test]
fn a_control_plane_restart_loses_and_double_spends_nothing() {
    let Some(mut w) = world("budget-restart") else {
        return;
    };
    for i in 0..7 {
        assert_eq!(w.search(i % 2, false), Paid::Allowed, "call {i}");
    }
    // The proxies report what they spent every 200 ms.
    let started = Instant::now();
    while w.books().0 < 7.0 {
        assert!(started.elapsed() < SETTLE_TIMEOUT, "{:?}", w.books());
        std::thread::sleep(Duration::from_millis(50));
    }

    w.cp.kill().unwrap();
    // Down: a free call never asks, so it goes on (it is a write: had it
    // asked, it would be refused); a paid call goes on while its proxy's
    // lease covers it, then is refused (a write) until the control plane
    // answers again.
    let mut down = Vec::new();
    for gw in 0..2 {
        w.ping(gw);
        w.ping(gw);
        for _ in 0..4 {
            down.push((gw, w.search(gw, true)));
        }
    }
    eprintln!("budget-restart: paid calls while the control plane was down: {down:?}");
    assert!(down.contains(&(0, Paid::Allowed)), "{down:?}");
    assert!(down.contains(&(0, Paid::Unavailable)), "{down:?}");
    assert!(!down.iter().any(|(_, p)| *p == Paid::Exhausted), "{down:?}");

    w.cp.restart().unwrap();
    w.spend_the_rest();
    w.exactly_the_budget();
}

/// One proxy (two workers) and sixteen threads: when its lease runs out,
/// both workers may ask for the next one at once; the second grant is
/// given back on the next settle. Meanwhile the proxy must not tell the
/// agent its daily budget is spent: every thread stops at its first 429,
/// so a 429 is only right once all 20 are spent.
#[test]
fn one_proxy_does_not_say_spent_while_budget_is_left() {
    let Some(w) = world("budget-one-proxy") else {
        return;
    };
    std::thread::scope(|s| {
        for t in 0..16 {
            let w = &w;
            s.spawn(move || {
                for _ in 0..LIMIT + 5 {
                    if w.search(0, false) == Paid::Exhausted {
                        return;
                    }
                }
                panic!("thread {t}: never refused");
            });
        }
    });
    let allowed = w.allowed.load(Ordering::SeqCst);
    let granted =
        w.cp.audit()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "lease.granted")
            .count();
    assert_eq!(
        allowed,
        LIMIT,
        "every thread was told the budget is spent with {allowed} of {LIMIT} USD spent; \
         {granted} leases granted; the books now (spent, reserved, remaining): {:?}",
        w.books()
    );
}
