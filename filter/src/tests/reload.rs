//! Hot reload: one worker per proxy polls, a newer bundle signed by a
//! trusted key is adopted by every worker, anything else keeps the running
//! one.

use super::*;
use crate::config::Config;
use crate::reload::{Outcome, Poller};

fn signed_at(revision: u64, key: &SigningKey) -> Vec<u8> {
    let opts = BuildOptions {
        revision,
        ..BuildOptions::default()
    };
    compile(&policy(), &opts, Some(key)).unwrap()
}

/// Another policy (version `other`) at `revision`.
fn other_at(revision: u64) -> Vec<u8> {
    let mut p = policy();
    p.version = "other".into();
    let opts = BuildOptions {
        revision,
        ..BuildOptions::default()
    };
    compile(&p, &opts, Some(&signing_key())).unwrap()
}

fn control() -> crate::config::ControlPlane {
    let c = Config::parse(
        br#"{"control_plane": {"cluster": "aegis_control", "token": "gw", "bundle_poll_ms": 10000}}"#,
    )
    .unwrap();
    c.control_plane.unwrap()
}

fn trusted() -> Vec<[u8; 32]> {
    vec![signing_key().verifying_key().to_bytes()]
}

fn running(revision: u64) -> Bundle {
    Bundle::load(&signed_at(revision, &signing_key()), &trusted()).unwrap()
}

fn reply(m: &Mock, status: Option<u16>, headers: &[(&str, &str)], body: &[u8]) {
    let mut h: Vec<(String, String)> = status
        .map(|s| vec![(":status".to_string(), s.to_string())])
        .unwrap_or_default();
    h.extend(
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    *m.call_answer.borrow_mut() = (h, body.to_vec());
}

const SEC: u64 = 1_000_000_000;

#[test]
fn one_worker_polls_and_every_worker_adopts_the_newer_bundle() {
    let store = Rc::new(SharedStore::default());
    let (a, b) = (Mock::vm(&store), Mock::vm(&store));
    let (mut pa, mut pb) = (Poller::default(), Poller::default());
    let cp = control();
    let old = running(100);

    pa.poll(&a, &cp, T0);
    pb.poll(&b, &cp, T0 + 1);
    assert_eq!(
        a.calls.borrow().len(),
        1,
        "the first worker claims the poll"
    );
    assert!(b.calls.borrow().is_empty(), "one poll per period and proxy");
    let call = a.calls.borrow()[0].clone();
    assert_eq!(call.header(":path"), Some("/v1/bundles/current"));
    assert_eq!(call.header(":method"), Some("GET"));
    assert_eq!(call.header("authorization"), Some("Bearer gw"));
    assert_eq!(call.header("if-none-match"), None, "nothing fetched yet");

    let new = signed_at(101, &signing_key());
    reply(&a, Some(200), &[("etag", "\"r101\"")], &new);
    let (outcome, bundle) = pa.answer(&a, 1, new.len(), &old, &trusted()).unwrap();
    assert_eq!(outcome, Outcome::Loaded);
    assert_eq!(bundle.unwrap().revision(), 101);

    // The other worker takes it from shared data, checked again.
    let adopted = pb.adopt(&b, &old, &trusted()).unwrap();
    assert_eq!(adopted.revision(), 101);
    // Nothing newer than what runs: nothing to adopt.
    assert!(pb.adopt(&b, &adopted, &trusted()).is_none());

    // The next period's poll asks with the ETag, and a 304 changes nothing.
    pb.poll(&b, &cp, T0 + 11 * SEC);
    let call = b.calls.borrow()[0].clone();
    assert_eq!(call.header("if-none-match"), Some("\"r101\""));
    reply(&b, Some(304), &[], b"");
    assert_eq!(
        pb.answer(&b, 1, 0, &adopted, &trusted()).unwrap().0,
        Outcome::Unchanged
    );
}

#[test]
fn rollbacks_and_untrusted_bundles_are_refused_and_the_running_one_stays() {
    let store = Rc::new(SharedStore::default());
    let cp = control();
    let old = running(100);
    let other_key = SigningKey::from_bytes(&[9u8; 32]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("rollback", signed_at(99, &signing_key())),
        ("same revision, other content", other_at(100)),
        ("signed by another key", signed_at(200, &other_key)),
        ("garbage", b"not a bundle".to_vec()),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let m = Mock::vm(&store);
        let mut p = Poller::default();
        p.poll(&m, &cp, T0 + (i as u64) * 20 * SEC);
        assert_eq!(m.calls.borrow().len(), 1, "{name}");
        reply(&m, Some(200), &[("etag", "\"x\"")], bytes);
        let (outcome, bundle) = p.answer(&m, 1, bytes.len(), &old, &trusted()).unwrap();
        assert_eq!(outcome, Outcome::Refused, "{name}");
        assert!(bundle.is_none(), "{name}");
        assert!(
            m.logged()
                .iter()
                .any(|(_, l)| l.contains("bundle from the control plane refused")),
            "{name}"
        );
    }
    // Nothing refused was shared with the other workers.
    let m = Mock::vm(&store);
    assert!(Poller::default().adopt(&m, &old, &trusted()).is_none());
}

/// The blob's own bundle published as it is: the poll finds the bundle
/// it runs, which is no rollback; its ETag is kept for the next polls.
#[test]
fn the_bundle_running_is_unchanged_and_its_etag_kept() {
    let store = Rc::new(SharedStore::default());
    let (a, b) = (Mock::vm(&store), Mock::vm(&store));
    let (mut pa, mut pb) = (Poller::default(), Poller::default());
    let cp = control();
    let old = running(100);
    let same = signed_at(100, &signing_key());
    pa.poll(&a, &cp, T0);
    reply(&a, Some(200), &[("etag", "\"r100\"")], &same);
    let (outcome, bundle) = pa.answer(&a, 1, same.len(), &old, &trusted()).unwrap();
    assert_eq!(outcome, Outcome::Unchanged);
    assert!(bundle.is_none());
    assert!(
        !a.logged().iter().any(|(_, l)| l.contains("refused")),
        "{:?}",
        a.logged()
    );
    assert!(pb.adopt(&b, &old, &trusted()).is_none());
    pb.poll(&b, &cp, T0 + 11 * SEC);
    let call = b.calls.borrow()[0].clone();
    assert_eq!(call.header("if-none-match"), Some("\"r100\""));
}

#[test]
fn a_failed_poll_keeps_the_running_bundle() {
    let store = Rc::new(SharedStore::default());
    let cp = control();
    let old = running(100);
    for (i, (status, body)) in [
        (None, &b""[..]),
        (Some(504), &b"upstream request timeout"[..]),
        (Some(401), &b"{}"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let m = Mock::vm(&store);
        let mut p = Poller::default();
        p.poll(&m, &cp, T0 + (i as u64) * 20 * SEC);
        reply(&m, status, &[], body);
        let (outcome, bundle) = p.answer(&m, 1, body.len(), &old, &trusted()).unwrap();
        assert_eq!((outcome, bundle.is_none()), (Outcome::Failed, true));
    }
}

#[test]
fn without_trusted_keys_nothing_is_accepted() {
    let store = Rc::new(SharedStore::default());
    let m = Mock::vm(&store);
    let mut p = Poller::default();
    let cp = control();
    let old = running(100);
    p.poll(&m, &cp, T0);
    let new = signed_at(101, &signing_key());
    reply(&m, Some(200), &[], &new);
    let (outcome, _) = p.answer(&m, 1, new.len(), &old, &[]).unwrap();
    assert_eq!(outcome, Outcome::Refused);
}

#[test]
fn an_answer_to_another_call_is_not_the_poll() {
    let store = Rc::new(SharedStore::default());
    let m = Mock::vm(&store);
    let mut p = Poller::default();
    assert!(p.answer(&m, 7, 0, &running(1), &trusted()).is_none());
}

/// A stream keeps the configuration it started with; new streams get the
/// new bundle.
#[test]
fn requests_in_flight_finish_on_their_bundle() {
    let sh = shared("");
    let mut p = policy();
    p.version = "test-8".into();
    let opts = BuildOptions {
        revision: 5,
        ..BuildOptions::default()
    };
    let bytes = compile(&p, &opts, Some(&signing_key())).unwrap();
    let next = Rc::new(sh.with_bundle(Bundle::load(&bytes, &trusted()).unwrap()));
    assert_eq!(next.source.as_str(), "control-plane");
    let note = || {
        request(
            "support-agent",
            "POST",
            "notes.internal",
            "/notes",
            &[],
            br#"{"text":"hello"}"#,
        )
    };
    let (old_m, new_m) = (note(), note());
    let mut old_s = Stream::new(Rc::clone(&old_m), Some(Rc::clone(&sh)));
    assert_eq!(old_s.on_request_headers(false), Flow::Continue);
    // The swap happens here, between this request's headers and its body.
    let mut new_s = Stream::new(Rc::clone(&new_m), Some(Rc::clone(&next)));
    assert_eq!(new_s.on_request_headers(false), Flow::Continue);
    assert_eq!(old_s.on_request_body(16, true), Flow::Continue);
    assert_eq!(new_s.on_request_body(16, true), Flow::Continue);
    assert_eq!(old_m.state(keys::POLICY_VERSION).as_deref(), Some("test-7"));
    assert_eq!(new_m.state(keys::POLICY_VERSION).as_deref(), Some("test-8"));
}
