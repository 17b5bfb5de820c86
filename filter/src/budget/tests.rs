//! Budget leases against the mock host's shared data, several mocks
//! playing the worker VMs of one proxy, and a small control plane that
//! keeps the books the way `aegis serve` does.

use super::tick::{answer, settled, Answer};
use super::*;
use crate::config::DEFAULT_LEASE_CALLS;
use crate::host::Level;
use crate::mock::{Mock, SharedStore};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// 2023-11-14 22:13:20 UTC.
const T: u64 = 1_700_000_000 * NANOS;
const SEC: u64 = NANOS;
const LEASE_TTL: u64 = 300;

fn agent() -> AgentRef {
    AgentRef::new(Some("acme"), "buyer")
}

fn need(r: Spend) -> NeedLease {
    match r {
        Spend::NeedLease(n) => n,
        other => panic!("expected NeedLease, got {other:?}"),
    }
}

fn state(store: &SharedStore) -> AgentState {
    AgentState::decode(&store.value(&key(&agent())).unwrap()).unwrap()
}

/// The control plane's books: leases granted from one pot.
#[derive(Default)]
struct Server {
    left: u64,
    next: u32,
    leases: BTreeMap<String, ServerLease>,
    /// Answers other than 200 to settles that were not retries of a
    /// closed lease: the filter never earns one.
    errors: Vec<String>,
}

#[derive(Debug, Default)]
struct ServerLease {
    granted: u64,
    spent: u64,
    returned: u64,
    closed: bool,
}

impl Server {
    fn with(limit: u64) -> Server {
        Server {
            left: limit,
            ..Server::default()
        }
    }

    fn lease(&mut self, want: u64, now_nanos: u64) -> Grant {
        let granted = want.min(self.left);
        self.left -= granted;
        let lease_id = (granted > 0).then(|| {
            self.next += 1;
            let id = format!("lse_{}", self.next);
            self.leases.insert(
                id.clone(),
                ServerLease {
                    granted,
                    ..ServerLease::default()
                },
            );
            id
        });
        Grant {
            lease_id,
            granted,
            remaining: self.left,
            expires_at: now_nanos / NANOS + LEASE_TTL,
        }
    }

    /// `POST /v1/budgets/settle`, as `aegis serve` answers it.
    fn settle(&mut self, s: &Settle) -> (u32, Vec<u8>) {
        let err = |status: u32, code: &str| {
            (
                status,
                format!(r#"{{"error":{{"type":"x","code":"{code}","message":"m"}}}}"#).into_bytes(),
            )
        };
        let Some(l) = self.leases.get_mut(&s.lease_id) else {
            self.errors.push(format!("404 {}", s.lease_id));
            return err(404, "not_found");
        };
        if l.closed {
            if s.is_final && s.spent == l.spent {
                return (200, b"{}".to_vec());
            }
            return err(409, "lease_closed");
        }
        if s.spent > l.granted {
            self.errors.push(format!("overspent {} {s:?}", l.granted));
            return err(400, "overspent");
        }
        if s.spent < l.spent {
            self.errors.push(format!("decreased {} {s:?}", l.spent));
            return err(400, "spent_decreased");
        }
        l.spent = s.spent;
        if s.is_final {
            l.returned = l.granted - l.spent;
            l.closed = true;
            self.left += l.returned;
        }
        (200, b"{}".to_vec())
    }
}

/// One call of `cost` by `vm`, leasing as needed: whether it may go.
fn call(vm: &Mock, server: &RefCell<Server>, cost: u64, now: u64) -> bool {
    match spend(vm, &agent(), cost, 10, now) {
        Spend::Spent => true,
        Spend::NeedLease(n) => {
            let grant = server.borrow_mut().lease(n.want, now);
            install(vm, &agent(), &n, &grant, cost, now) == Install::Spent
        }
        Spend::Exhausted { .. } | Spend::Unavailable => false,
    }
}

/// One tick by `vm`, every answer delivered.
fn tick_all(vm: &Mock, server: &RefCell<Server>, now: u64) -> usize {
    let due = due_settles(vm, now);
    for s in &due {
        let (status, body) = server.borrow_mut().settle(s);
        settled(vm, s, &answer(status, &body));
    }
    due.len()
}

#[test]
fn spends_locally_from_a_lease_of_ten_calls() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(100_000_000));
    let n = need(spend(&vm, &agent(), 250_000, DEFAULT_LEASE_CALLS, T));
    assert_eq!(n.want, 2_500_000);
    assert_eq!(n.day, utc::day_number(T / NANOS));
    let body: serde_json::Value = serde_json::from_str(&n.body(&agent())).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"tenant": "acme", "agent": "buyer", "day": "2023-11-14", "want_usd": 2.5})
    );
    let grant = server.borrow_mut().lease(n.want, T);
    assert_eq!(
        install(&vm, &agent(), &n, &grant, 250_000, T),
        Install::Spent
    );
    let writes = store.writes.get();
    for i in 1..10 {
        assert_eq!(
            spend(&vm, &agent(), 250_000, 10, T + i * SEC),
            Spend::Spent,
            "{i}"
        );
    }
    // Ten calls, one callout; each spend is one write.
    assert_eq!(store.writes.get() - writes, 9);
    let n = need(spend(&vm, &agent(), 250_000, 10, T + 10 * SEC));
    let grant = server.borrow_mut().lease(n.want, T + 10 * SEC);
    assert!(call_install(&vm, &n, &grant, 250_000, T + 10 * SEC));
    let s = state(&store);
    assert_eq!(
        s.owed,
        vec![state::Owed {
            lease_id: "lse_1".into(),
            spent: 2_500_000
        }]
    );
    assert_eq!(s.current.as_ref().unwrap().id, "lse_2");
    assert_eq!(s.current.as_ref().unwrap().spent, 250_000);
    // A free call never needs a lease.
    let other = AgentRef::new(None, "nobody");
    assert_eq!(spend(&vm, &other, 0, 10, T), Spend::Spent);
}

fn call_install(vm: &Mock, n: &NeedLease, grant: &Grant, cost: u64, now: u64) -> bool {
    install(vm, &agent(), n, grant, cost, now) == Install::Spent
}

#[test]
fn the_lease_asked_for_covers_at_least_the_call() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    // A few seconds apart: each is the only lease under way.
    assert_eq!(need(spend(&vm, &agent(), 7, 1, T)).want, 7);
    assert_eq!(need(spend(&vm, &agent(), 7, 0, T + 3 * SEC)).want, 7);
    assert_eq!(
        need(spend(&vm, &agent(), u64::MAX / 2, 10, T + 6 * SEC)).want,
        u64::MAX
    );
}

#[test]
fn exhausted_budgets_answer_until_midnight_and_give_small_grants_back() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(1_000_000));
    let n = need(spend(&vm, &agent(), 400_000, 10, T));
    let grant = server.borrow_mut().lease(n.want, T);
    assert_eq!(grant.granted, 1_000_000);
    assert!(call_install(&vm, &n, &grant, 400_000, T));
    assert_eq!(spend(&vm, &agent(), 400_000, 10, T), Spend::Spent);
    // 200_000 left in the lease, none at the server.
    let n = need(spend(&vm, &agent(), 400_000, 10, T));
    let empty_grant = server.borrow_mut().lease(n.want, T);
    assert_eq!(empty_grant.lease_id, None);
    // 22:13:20 UTC: 6400 s to midnight.
    assert_eq!(
        install(&vm, &agent(), &n, &empty_grant, 400_000, T),
        Install::Exhausted {
            retry_after_secs: 6400
        }
    );
    // The old lease stays in use for calls it can pay.
    assert_eq!(spend(&vm, &agent(), 200_000, 10, T), Spend::Spent);
    // A grant smaller than the call: refused, and given back whole.
    let small = Grant {
        lease_id: Some("lse_small".into()),
        granted: 100,
        remaining: 0,
        expires_at: T / NANOS + 300,
    };
    assert!(matches!(
        install(&vm, &agent(), &n, &small, 400_000, T),
        Install::Exhausted { .. }
    ));
    assert_eq!(
        state(&store).owed,
        vec![state::Owed {
            lease_id: "lse_small".into(),
            spent: 0
        }]
    );
    assert_eq!(
        remaining(&vm, &agent(), T),
        Remaining {
            lease: 0,
            day: Some(0)
        }
    );
    // A spent day is not asked about again at every call: refused in the
    // proxy for SPENT_RECHECK_SECS, then asked again (other proxies may
    // have given budget back meanwhile).
    assert_eq!(
        spend(&vm, &agent(), 400_000, 10, T + NANOS),
        Spend::Exhausted {
            retry_after_secs: 6399
        }
    );
    let later = T + SPENT_RECHECK_SECS * NANOS;
    assert!(matches!(
        spend(&vm, &agent(), 400_000, 10, later),
        Spend::NeedLease(_)
    ));
}

#[test]
fn a_lease_another_worker_installed_meanwhile_is_used_and_ours_given_back() {
    let store = Rc::new(SharedStore::default());
    let (a, b) = (Mock::vm(&store), Mock::vm(&store));
    let server = RefCell::new(Server::with(100_000_000));
    // Both workers find no lease and ask for one; the second, finding the
    // first under way, only for its own call.
    let na = need(spend(&a, &agent(), 1_000, 10, T));
    let nb = need(spend(&b, &agent(), 1_000, 10, T));
    assert_eq!((na.want, nb.want), (10_000, 1_000));
    let ga = server.borrow_mut().lease(na.want, T);
    let gb = server.borrow_mut().lease(nb.want, T);
    assert!(call_install(&a, &na, &ga, 1_000, T));
    assert!(call_install(&b, &nb, &gb, 1_000, T));
    let s = state(&store);
    let current = s.current.unwrap();
    assert_eq!((current.id.as_str(), current.spent), ("lse_1", 2_000));
    assert_eq!(
        s.owed,
        vec![state::Owed {
            lease_id: "lse_2".into(),
            spent: 0
        }]
    );
    // Both leases end settled in full: 2_000 spent, the rest back.
    tick_all(&a, &server, T + 400 * SEC);
    let sv = server.borrow();
    assert_eq!(sv.leases["lse_1"].spent, 2_000);
    assert_eq!(sv.leases["lse_2"].returned, 1_000);
    assert!(sv.leases.values().all(|l| l.closed));
    assert_eq!(sv.left, 100_000_000 - 2_000);
}

#[test]
fn an_install_racing_another_between_read_and_write_retries_on_the_new_state() {
    let store = Rc::new(SharedStore::default());
    let a = Mock::vm(&store);
    let b = Rc::new(Mock::vm(&store));
    let server = Rc::new(RefCell::new(Server::with(100_000_000)));
    let na = need(spend(&a, &agent(), 1_000, 10, T));
    let ga = server.borrow_mut().lease(na.want, T);
    let (b2, s2) = (Rc::clone(&b), Rc::clone(&server));
    // B leases and spends between A's read and A's write.
    store.interleave(move || assert!(call(&b2, &s2, 3_000, T)));
    assert!(call_install(&a, &na, &ga, 1_000, T));
    let s = state(&store);
    // B, finding A's lease under way, leased only its own cost (lse_2,
    // 3_000) and spent it; A's lease replaced it and A spent from its own.
    assert_eq!(s.current.as_ref().unwrap().id, "lse_1");
    assert_eq!(s.current.as_ref().unwrap().spent, 1_000);
    assert_eq!(
        s.owed,
        vec![state::Owed {
            lease_id: "lse_2".into(),
            spent: 3_000
        }]
    );
    // Injected CAS conflicts on a spend are retried, the cost taken once.
    store.conflicts.set(3);
    assert_eq!(spend(&a, &agent(), 1_000, 10, T), Spend::Spent);
    assert_eq!(state(&store).current.unwrap().spent, 2_000);
}

#[test]
fn leases_are_not_spent_near_their_expiry_nor_on_another_day() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(100_000_000));
    assert!(call(&vm, &server, 1_000, T));
    let edge = T + (LEASE_TTL - EXPIRY_MARGIN_SECS) * SEC;
    assert_eq!(spend(&vm, &agent(), 1_000, 10, edge - SEC), Spend::Spent);
    assert!(matches!(
        spend(&vm, &agent(), 1_000, 10, edge),
        Spend::NeedLease(_)
    ));
    // The tick gives it back with what was spent, and drops it.
    assert_eq!(tick_all(&vm, &server, edge), 1);
    let s = state(&store);
    assert_eq!((s.current, s.owed), (None, vec![]));
    let sv = server.borrow();
    assert_eq!(
        (sv.leases["lse_1"].spent, sv.leases["lse_1"].closed),
        (2_000, true)
    );
    drop(sv);
    // Midnight ends a lease too (22:13:20 + 6400 s).
    assert!(call(&vm, &server, 1_000, T + 6_300 * SEC));
    let n = need(spend(&vm, &agent(), 1_000, 10, T + 6_400 * SEC));
    assert_eq!(utc::day_text(i64::from(n.day)), "2023-11-15");
}

#[test]
fn running_leases_are_reported_and_failed_settles_retried() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(100_000_000));
    assert!(call(&vm, &server, 1_000, T));
    let due = due_settles(&vm, T + SEC);
    assert_eq!(
        due,
        vec![Settle {
            agent: agent(),
            lease_id: "lse_1".into(),
            spent: 1_000,
            is_final: false
        }]
    );
    let body: serde_json::Value = serde_json::from_str(&due[0].body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"lease_id": "lse_1", "spent_usd": 0.001, "final": false})
    );
    // No answer (a reset, a timeout): still due.
    settled(&vm, &due[0], &answer(0, b""));
    settled(&vm, &due[0], &answer(503, b"upstream"));
    assert_eq!(due_settles(&vm, T + SEC), due);
    assert_eq!(tick_all(&vm, &server, T + SEC), 1);
    // Reported: nothing due until more is spent.
    assert_eq!(due_settles(&vm, T + 2 * SEC), vec![]);
    assert_eq!(spend(&vm, &agent(), 1_000, 10, T), Spend::Spent);
    assert_eq!(due_settles(&vm, T + 2 * SEC)[0].spent, 2_000);
    // The control plane closed the lease: stop using it.
    let s = due_settles(&vm, T + 2 * SEC).remove(0);
    settled(
        &vm,
        &s,
        &answer(409, br#"{"error":{"code":"lease_closed"}}"#),
    );
    assert_eq!(state(&store).current, None);
    assert!(
        vm.logged()
            .iter()
            .any(|(l, m)| *l == Level::Warn
                && m.contains("no longer takes reports for lease `lse_1`"))
    );
}

#[test]
fn final_settles_stay_queued_until_answered() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(100_000_000));
    assert!(call(&vm, &server, 1_000, T));
    let late = T + LEASE_TTL * SEC;
    let due = due_settles(&vm, late);
    assert_eq!(due.len(), 1);
    assert!(due[0].is_final);
    // The answer is lost after the control plane applied it: sent again,
    // it answers 200 again, and the queue empties.
    let _ = server.borrow_mut().settle(&due[0]);
    assert_eq!(due_settles(&vm, late), due);
    assert_eq!(tick_all(&vm, &server, late), 1);
    assert_eq!(due_settles(&vm, late), vec![]);
    assert!(server.borrow().errors.is_empty());
}

#[test]
fn settle_answers() {
    assert_eq!(answer(200, b"{}"), Answer::Accepted);
    assert_eq!(answer(409, b""), Answer::Closed);
    assert_eq!(
        answer(
            400,
            br#"{"error":{"type":"t","code":"spent_decreased","message":"m"}}"#
        ),
        Answer::Stale
    );
    assert_eq!(
        answer(
            400,
            br#"{"error":{"type":"t","code":"overspent","message":"too much"}}"#
        ),
        Answer::Rejected("400 overspent: too much".into())
    );
    assert_eq!(answer(404, b"<html>"), Answer::Rejected("404".into()));
    for status in [0, 401, 403, 500, 503, 504] {
        assert_eq!(answer(status, b""), Answer::Retry, "{status}");
    }
}

#[test]
fn lease_answers_are_checked() {
    let ok = Grant::parse(
        br#"{"lease_id":"lse_9","granted_usd":2.5,"remaining_usd":7.25,"limit_usd":10,"expires_at":1700000300}"#,
    );
    assert_eq!(
        ok,
        Ok(Grant {
            lease_id: Some("lse_9".into()),
            granted: 2_500_000,
            remaining: 7_250_000,
            expires_at: 1_700_000_300
        })
    );
    let none = Grant::parse(
        br#"{"lease_id":null,"granted_usd":0,"remaining_usd":0,"limit_usd":10,"expires_at":1}"#,
    );
    assert_eq!(none.unwrap().lease_id, None);
    for (body, e) in [
        (
            r#"{"lease_id":null,"granted_usd":1,"remaining_usd":0,"expires_at":1}"#,
            "a grant without a `lease_id`",
        ),
        (
            r#"{"lease_id":"x","granted_usd":0,"remaining_usd":0,"expires_at":1}"#,
            "a `lease_id` for nothing granted",
        ),
        (
            r#"{"lease_id":"x","granted_usd":-1,"remaining_usd":0,"expires_at":1}"#,
            "`granted_usd` is -1",
        ),
        (
            r#"{"lease_id":"","granted_usd":1,"remaining_usd":0,"expires_at":1}"#,
            "`lease_id` is 0 bytes",
        ),
        (r#"{"granted_usd":1}"#, "missing field"),
        ("<html>", "invalid lease answer"),
    ] {
        let got = Grant::parse(body.as_bytes()).unwrap_err();
        assert!(got.contains(e), "{body}: {got}");
    }
}

#[test]
fn garbage_in_shared_data_is_no_state_and_logged() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(100_000_000));
    store.poke(&key(&agent()), b"B\x01\x07\xff");
    assert!(matches!(
        spend(&vm, &agent(), 1_000, 10, T),
        Spend::NeedLease(_)
    ));
    assert!(vm
        .logged()
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("unreadable")));
    assert!(call(&vm, &server, 1_000, T));
    assert_eq!(state(&store).current.unwrap().spent, 1_000);
    store.poke(tick::INDEX_KEY, b"junk");
    assert_eq!(tick::indexed(&vm), vec![]);
}

#[test]
fn a_broken_host_is_unavailable_and_a_grant_it_cannot_keep_goes_back() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(100_000_000));
    let n = need(spend(&vm, &agent(), 1_000, 10, T));
    let grant = server.borrow_mut().lease(n.want, T);
    store.broken.set(true);
    assert_eq!(spend(&vm, &agent(), 1_000, 10, T), Spend::Unavailable);
    let Install::Unrecorded {
        give_back: Some(back),
    } = install(&vm, &agent(), &n, &grant, 1_000, T)
    else {
        panic!("expected Unrecorded");
    };
    assert_eq!((back.spent, back.is_final), (0, true));
    assert_eq!(server.borrow_mut().settle(&back).0, 200);
    assert_eq!(server.borrow().left, 100_000_000);
    assert!(vm
        .logged()
        .iter()
        .any(|(_, m)| m.contains("InternalFailure")));
    assert!(!claim(&vm, T, SEC));
    assert_eq!(due_settles(&vm, T), vec![]);
}

#[test]
fn one_worker_ticks_per_period() {
    let store = Rc::new(SharedStore::default());
    let (a, b) = (Mock::vm(&store), Mock::vm(&store));
    assert!(claim(&a, T, SEC));
    assert!(!claim(&b, T + SEC / 2, SEC));
    assert!(!claim(&a, T + SEC / 2, SEC));
    // A timer firing a little early still gets the next period.
    assert!(claim(&b, T + SEC - SEC / 20, SEC));
    assert!(!claim(&a, T + SEC, SEC));
    store.poke(tick::CLAIM_KEY, b"?");
    assert!(claim(&a, T + SEC, SEC));
}

#[test]
fn remaining_is_the_lease_plus_what_the_server_had_left() {
    let store = Rc::new(SharedStore::default());
    let vm = Mock::vm(&store);
    let server = RefCell::new(Server::with(1_000_000));
    assert_eq!(
        remaining(&vm, &agent(), T),
        Remaining {
            lease: 0,
            day: None
        }
    );
    assert!(call(&vm, &server, 10_000, T));
    assert_eq!(
        remaining(&vm, &agent(), T),
        Remaining {
            lease: 90_000,
            day: Some(990_000)
        }
    );
    // Tomorrow: nothing known.
    assert_eq!(
        remaining(&vm, &agent(), T + 86_400 * SEC),
        Remaining {
            lease: 0,
            day: None
        }
    );
}

/// xorshift64: the seeded randomness of the interleaving test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Three workers spend, lease, race each other between read and write,
/// lose CAS races, tick and lose settle answers, across expiries and a
/// midnight, in random order; afterwards every lease is settled and the
/// books balance: what calls were allowed to spend is what the leases
/// report spent, and every lease's grant is its spent plus what it gave
/// back, never more.
#[test]
fn random_interleavings_keep_the_books() {
    for seed in 1..=300u64 {
        run_interleaving(seed);
    }
}

fn run_interleaving(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let store = Rc::new(SharedStore::default());
    let vms: Vec<Rc<Mock>> = (0..3).map(|_| Rc::new(Mock::vm(&store))).collect();
    // What each worker does at configure time.
    for vm in &vms {
        prepare(vm.as_ref(), &agent()).unwrap();
    }
    let limit = 5_000_000;
    let server = Rc::new(RefCell::new(Server::with(limit)));
    let allowed = Rc::new(RefCell::new(0u64));
    // 15 minutes before midnight, UTC.
    let mut now = (19_000 * 86_400 - 900) * NANOS;
    let costs = [1_000, 20_000, 150_000, 700_000];
    for _ in 0..400 {
        match rng.below(100) {
            0..=59 => {
                let vm = &vms[rng.below(3) as usize];
                let cost = costs[rng.below(4) as usize];
                if rng.below(5) == 0 {
                    // Another worker's call lands inside this one.
                    let other = Rc::clone(&vms[rng.below(3) as usize]);
                    let other_cost = costs[rng.below(4) as usize];
                    let (s2, a2) = (Rc::clone(&server), Rc::clone(&allowed));
                    store.interleave(move || {
                        if call(&other, &s2, other_cost, now) {
                            *a2.borrow_mut() += other_cost;
                        }
                    });
                }
                if rng.below(7) == 0 {
                    store.conflicts.set(rng.below(4) as u32);
                }
                if call(vm, &server, cost, now) {
                    *allowed.borrow_mut() += cost;
                }
                store.conflicts.set(0);
                store.interleave(|| {});
            }
            60..=79 => {
                let vm = &vms[rng.below(3) as usize];
                if claim(vm.as_ref(), now, SEC) {
                    for s in due_settles(vm.as_ref(), now) {
                        match rng.below(4) {
                            // Never arrives.
                            0 => settled(vm.as_ref(), &s, &answer(0, b"")),
                            // Applied, but the answer is lost.
                            1 => {
                                let _ = server.borrow_mut().settle(&s);
                                settled(vm.as_ref(), &s, &answer(504, b""));
                            }
                            _ => {
                                let (status, body) = server.borrow_mut().settle(&s);
                                settled(vm.as_ref(), &s, &answer(status, &body));
                            }
                        }
                    }
                }
            }
            _ => {
                let span = if rng.below(10) == 0 { 200 } else { 8 };
                now += rng.below(span) * SEC;
            }
        }
    }
    // Past every expiry, ticks with every answer delivered drain the queue.
    now += 1_000 * SEC;
    for round in 0.. {
        assert!(round < 5, "seed {seed}: settles still due");
        if tick_all(&vms[0], &server, now) == 0 {
            break;
        }
    }
    let sv = server.borrow();
    assert!(sv.errors.is_empty(), "seed {seed}: {:?}", sv.errors);
    let spent: u64 = sv.leases.values().map(|l| l.spent).sum();
    assert_eq!(spent, *allowed.borrow(), "seed {seed}");
    for (id, l) in &sv.leases {
        assert!(l.closed, "seed {seed}: {id} open");
        assert_eq!(l.spent + l.returned, l.granted, "seed {seed}: {id}");
    }
    assert_eq!(sv.left + spent, limit, "seed {seed}");
    assert!(
        !sv.leases.is_empty(),
        "seed {seed}: the run should lease something"
    );
}
