//! The control plane under concurrency and faults: 64 concurrent leases
//! and redeems (one process, and two replicas on one PostgreSQL), `kill -9`
//! under load, PostgreSQL going away and coming back, and audit rows
//! edited, deleted or swapped behind the service's back.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::control::{call, code, long_poll, today, try_call, Serve, AEGIS};
use support::postgres::TempPostgres;

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn lease_body(want: f64) -> Value {
    json!({"tenant": "default", "agent": "research-agent", "day": today(), "want_usd": want})
}

/// 64 leases of $0.50 at once against a $20 limit, spread over `urls`:
/// exactly $20 granted, to exactly 40 of them.
fn sixty_four_leases(urls: &[String], gw: &str) {
    let barrier = Arc::new(std::sync::Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let (gw, barrier) = (gw.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let (st, v) = call(
                    &url,
                    "POST",
                    "/v1/budgets/lease",
                    Some(&gw),
                    Some(&lease_body(0.5)),
                );
                assert_eq!(st, 200, "{v}");
                v["granted_usd"].as_f64().unwrap()
            })
        })
        .collect();
    let grants: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let total: f64 = grants.iter().sum();
    assert!(
        (total - 20.0).abs() < 1e-9,
        "granted {total} of a $20 limit"
    );
    assert_eq!(grants.iter().filter(|g| **g > 0.0).count(), 40);
    let (_, v) = call(
        &urls[0],
        "POST",
        "/v1/budgets/lease",
        Some(gw),
        Some(&lease_body(0.5)),
    );
    assert_eq!(v["granted_usd"].as_f64(), Some(0.0));
}

/// One approved approval redeemed by 64 gateways at once: one succeeds.
fn sixty_four_redeems(urls: &[String], gw: &str, approver: &str) {
    let body = json!({"tenant": "default", "agent": "research-agent", "tool": "openai", "action": "chat", "rule": "r",
                      "reason": "needs a person", "policy_version": "v", "digest": DIGEST, "summary": {}});
    let (st, a) = call(&urls[0], "POST", "/v1/approvals", Some(gw), Some(&body));
    assert_eq!(st, 201, "{a}");
    let id = a["approval_id"].as_str().unwrap().to_owned();
    let (st, _) = call(
        &urls[0],
        "POST",
        &format!("/v1/approvals/{id}/decision"),
        Some(approver),
        Some(&json!({"approve": true})),
    );
    assert_eq!(st, 200);
    let barrier = Arc::new(std::sync::Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let (gw, id, barrier) = (gw.to_owned(), id.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                call(
                    &url,
                    "POST",
                    &format!("/v1/approvals/{id}/redeem"),
                    Some(&gw),
                    Some(&json!({"digest": DIGEST})),
                )
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|(s, v)| *s == 200 || (*s == 409 && code(v) == "already_redeemed")),
        "{results:?}"
    );
}

#[test]
fn concurrency_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(
        &format!("sqlite://{}", dir.path().join("a.db").display()),
        dir.path(),
        &[],
    );
    let gw = s.token("gateway", "*", "edge");
    let approver = s.token("approver", "*", "alice");
    sixty_four_leases(std::slice::from_ref(&s.url), &gw);
    sixty_four_redeems(std::slice::from_ref(&s.url), &gw, &approver);
}

#[test]
fn concurrency_across_two_replicas_on_postgres() {
    let pg = TempPostgres::start().expect("PostgreSQL for the tests");
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Serve::start(&pg.url(), d1.path(), &[]);
    let b = Serve::start(&pg.url(), d2.path(), &[]);
    // One store, one service key: a token from either works on both.
    let gw = a.token("gateway", "*", "edge");
    let approver = b.token("approver", "*", "alice");
    let urls = [a.url.clone(), b.url.clone()];
    sixty_four_leases(&urls, &gw);
    sixty_four_redeems(&urls, &gw, &approver);
    // A decision made on one replica reaches a long-poll on the other.
    let body = json!({"tenant": "default", "agent": "research-agent", "tool": "openai", "action": "chat", "rule": "r",
                      "reason": "needs a person", "policy_version": "v", "digest": DIGEST.replace('0', "f"), "summary": {}});
    let (_, created) = call(&a.url, "POST", "/v1/approvals", Some(&gw), Some(&body));
    let id = created["approval_id"].as_str().unwrap().to_owned();
    let waiter = long_poll(&a.url, &id, &gw);
    let (st, _) = call(
        &b.url,
        "POST",
        &format!("/v1/approvals/{id}/decision"),
        Some(&approver),
        Some(&json!({"approve": false, "comment": "no"})),
    );
    assert_eq!(st, 200);
    let (_, seen) = waiter.join().unwrap();
    assert_eq!(seen["status"], "denied", "{seen}");
    let out = Command::new(AEGIS)
        .args(["audit", "verify", "--db", &pg.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let mut s = Serve::start(&db, dir.path(), &[]);
    let gw = s.token("gateway", "*", "edge");
    let leases = Arc::new(Mutex::new(Vec::<(String, f64)>::new()));
    let approvals = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (url, gw) = (s.url.clone(), gw.clone());
            let (leases, approvals, acked, stop) = (leases.clone(), approvals.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if i % 2 == 0 {
                        match try_call(&url, "POST", "/v1/budgets/lease", Some(&gw), Some(&lease_body(0.01))) {
                            Ok((200, v)) => {
                                if let Some(id) = v["lease_id"].as_str() {
                                    leases.lock().unwrap().push((id.to_owned(), v["granted_usd"].as_f64().unwrap()));
                                }
                            }
                            Ok((st, v)) => panic!("{st} {v}"),
                            Err(_) => break,
                        }
                    } else {
                        let digest = format!("{w:02x}{i:062x}");
                        let body = json!({"tenant": "default", "agent": "research-agent", "tool": "openai", "action": "chat",
                                          "rule": "r", "reason": "x", "policy_version": "v", "digest": digest, "summary": {}});
                        match try_call(&url, "POST", "/v1/approvals", Some(&gw), Some(&body)) {
                            Ok((201, v)) => approvals.lock().unwrap().push(v["approval_id"].as_str().unwrap().to_owned()),
                            Ok((st, v)) => panic!("{st} {v}"),
                            Err(_) => break,
                        }
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Kill while the workers are mid-flight.
    while acked.load(Ordering::SeqCst) < 300 {
        std::thread::yield_now();
    }
    s.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    s.restart();
    let viewer = s.token("viewer", "*", "v");
    let acked_leases = leases.lock().unwrap().clone();
    let acked_approvals = approvals.lock().unwrap().clone();
    assert!(!acked_leases.is_empty() && !acked_approvals.is_empty());
    for id in &acked_approvals {
        let (st, v) = s.get(&format!("/v1/approvals/{id}"), Some(&viewer));
        assert_eq!(
            (st, v["status"].as_str()),
            (200, Some("pending")),
            "acknowledged approval {id} lost"
        );
    }
    // Every acknowledged lease is still reserved, none twice: the reserved
    // total is at least their sum (a lease committed as the process died
    // may not have been acknowledged) and ids are unique.
    let ids: HashSet<&String> = acked_leases.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), acked_leases.len());
    let acked_sum: f64 = acked_leases.iter().map(|(_, g)| g).sum();
    let (_, b) = s.get(
        "/v1/budgets?tenant=default&agent=research-agent",
        Some(&viewer),
    );
    let reserved = b["agents"][0]["reserved_usd"].as_f64().unwrap();
    assert!(
        reserved + 1e-9 >= acked_sum && reserved <= 20.0,
        "reserved {reserved}, acknowledged {acked_sum}"
    );
    for (id, granted) in acked_leases.iter().take(20) {
        let (st, v) = s.post(
            "/v1/budgets/settle",
            Some(&gw),
            &json!({"lease_id": id, "spent_usd": 0, "final": true}),
        );
        assert_eq!(
            (st, v["returned_usd"].as_f64()),
            (200, Some(*granted)),
            "{v}"
        );
    }
    let out = Command::new(AEGIS)
        .args(["audit", "verify", "--db", &db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn postgres_going_away_is_a_quick_503_and_the_service_recovers() {
    let mut pg = TempPostgres::start().expect("PostgreSQL for the tests");
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(&pg.url(), dir.path(), &[]);
    let gw = s.token("gateway", "*", "edge");
    assert_eq!(s.get("/readyz", None).0, 200);
    pg.stop().unwrap();
    let (st, _) = s.get("/readyz", None);
    assert_eq!(st, 503);
    let (st, v) = s.post("/v1/budgets/lease", Some(&gw), &lease_body(1.0));
    assert_eq!((st, code(&v)), (503, "store_unavailable"), "{v}");
    let (st, _) = s.get("/healthz", None);
    assert_eq!(st, 200, "the process itself is alive");
    pg.restart().unwrap();
    // The pool reconnects on its own; no restart of `aegis serve`.
    let mut ready = false;
    for _ in 0..100 {
        if s.get("/readyz", None).0 == 200 {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        ready,
        "the service did not recover after PostgreSQL came back"
    );
    let (st, v) = s.post("/v1/budgets/lease", Some(&gw), &lease_body(1.0));
    assert_eq!((st, v["granted_usd"].as_f64()), (200, Some(1.0)), "{v}");
}

/// Runs SQL on a SQLite file while the service is stopped.
fn sqlite_exec(path: &std::path::Path, sql: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        for s in sql {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    });
}

fn verify_db(db: &str) -> (bool, String) {
    let out = Command::new(AEGIS)
        .args(["audit", "verify", "--db", db])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn tampering_with_the_audit_log_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.db");
    let db = format!("sqlite://{}", file.display());
    let mut s = Serve::start(&db, dir.path(), &[]);
    let gw = s.token("gateway", "*", "edge");
    for i in 0..10 {
        let (st, _) = s.post(
            "/v1/budgets/lease",
            Some(&gw),
            &lease_body(0.1 + f64::from(i)),
        );
        assert_eq!(st, 200);
    }
    // A graceful stop signs a last checkpoint over everything.
    assert!(s.terminate().success());
    sqlite_exec(&file, &["PRAGMA wal_checkpoint(TRUNCATE)"]);
    let (ok, text) = verify_db(&db);
    assert!(ok && text.starts_with("audit chain intact"), "{text}");
    let pristine = std::fs::read(&file).unwrap();
    let case = |sql: &[&str], broken_at: i64| {
        std::fs::write(&file, &pristine).unwrap();
        sqlite_exec(&file, sql);
        let (ok, text) = verify_db(&db);
        assert!(!ok, "tampering not found: {sql:?}");
        assert!(
            text.starts_with(&format!("audit chain broken at record {broken_at}:")),
            "{sql:?}: {text}"
        );
    };
    // An edited amount.
    case(
        &["UPDATE audit SET data = replace(data, 'granted_usd', 'granted_USD') WHERE seq = 8"],
        8,
    );
    // A record deleted from the middle.
    case(&["DELETE FROM audit WHERE seq = 6"], 6);
    // Two records swapped (their content exchanged).
    case(
        &[
            "UPDATE audit SET seq = -1 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = 5",
            "UPDATE audit SET seq = 5 WHERE seq = -1",
        ],
        4,
    );
    // The newest records cut off, head rewritten to match: the signed
    // checkpoint still names the longer chain.
    let (_, last) = {
        std::fs::write(&file, &pristine).unwrap();
        let out = Command::new(AEGIS)
            .args(["audit", "export", "--db", &db])
            .output()
            .unwrap();
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let n = lines.len();
        (lines.clone(), lines[n - 3].clone())
    };
    let cut = last["seq"].as_i64().unwrap();
    let head_sql = format!(
        "UPDATE audit_head SET seq = {cut}, hash = '{}' WHERE id = 1",
        last["hash"].as_str().unwrap()
    );
    let delete_sql = format!("DELETE FROM audit WHERE seq > {cut}");
    case(&[&delete_sql, &head_sql], cut + 1);
}
