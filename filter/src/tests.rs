//! The stream logic against a mock host, with a bundle compiled from an IR
//! policy: configuration, verdicts on the wire, buffering, shadow mode,
//! filter state and metrics.

use crate::host::{Host, Level, MetricKind, Stored};
use crate::metrics::{self, Metrics};
use crate::reply::RequestIds;
use crate::shared::Shared;
use crate::state_keys as keys;
use crate::stream::{Flow, Stream, DECISION_HEADER, SHADOW_HEADER};
use aegis_engine::builder::bundle::{compile, BuildOptions};
use aegis_engine::ir::{
    Action, Agent, Approval, BodyKind, Detector, Dlp, DlpAction, Mode, Op, Policy, Predicate, Rule,
    Tool,
};
use aegis_engine::jwt::IdentityConfig;
use aegis_engine::Bundle;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

const T0: u64 = 1_700_000_000_000_000_000;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn http(name: &str, method: &str, path: &str) -> Action {
    Action {
        name: name.into(),
        method: Some(method.into()),
        path: Some(path.into()),
        write: false,
    }
}

fn rule(id: &str, tool: usize, action: usize, conditions: Vec<Predicate>) -> Rule {
    Rule {
        id: id.into(),
        tool,
        action,
        when: vec![],
        conditions,
        approval: Approval::OnFailure,
        cost_usd: None,
    }
}

fn agent(id: &str, mode: Mode, hosts: &[&str], dlp: bool, rules: Vec<Rule>) -> Agent {
    Agent {
        id: id.into(),
        name: id.into(),
        tenant: None,
        mode,
        allow_hosts: Some(hosts.iter().map(|h| (*h).into()).collect()),
        budget: None,
        dlp: dlp.then(|| Dlp {
            detectors: vec![Detector::Ssn, Detector::Email],
            custom: vec![],
            action: DlpAction::Redact,
        }),
        rules,
    }
}

fn policy() -> Policy {
    Policy {
        version: "test-7".into(),
        identity: Some(IdentityConfig {
            issuer: "https://tokens.test".into(),
            audience: "aegis".into(),
            keys: vec![],
            agent_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_age_secs: None,
            skew_secs: 60,
            insecure_agent_header: true,
            token_header: "authorization".into(),
        }),
        tools: vec![
            Tool {
                name: "stripe-payments".into(),
                hosts: vec!["api.stripe.com".into()],
                body: BodyKind::Form,
                mcp_path: None,
                gzip: false,
                filter_tools_list: true,
                actions: vec![
                    http("create_payment", "POST", "/v1/payment_intents"),
                    http("get_customer", "GET", "/v1/customers/{id}"),
                ],
            },
            Tool {
                name: "notes".into(),
                hosts: vec!["notes.internal".into()],
                body: BodyKind::Json,
                mcp_path: None,
                gzip: false,
                filter_tools_list: true,
                actions: vec![http("create_note", "POST", "/notes")],
            },
            Tool {
                name: "files".into(),
                hosts: vec!["mcp.files.internal".into()],
                body: BodyKind::Json,
                mcp_path: Some("/mcp".into()),
                gzip: false,
                filter_tools_list: true,
                actions: ["read_file", "delete_file"]
                    .into_iter()
                    .map(|name| Action {
                        name: name.into(),
                        method: None,
                        path: None,
                        write: false,
                    })
                    .collect(),
            },
        ],
        agents: vec![
            agent(
                "finance-agent",
                Mode::Enforce,
                &["api.stripe.com"],
                false,
                vec![
                    rule(
                        "finance-agent/stripe-payments/create_payment#0",
                        0,
                        0,
                        vec![Predicate {
                            param: "amount".into(),
                            op: Op::Le(5000.0),
                        }],
                    ),
                    rule("finance-agent/stripe-payments/get_customer#0", 0, 1, vec![]),
                ],
            ),
            agent(
                "support-agent",
                Mode::Enforce,
                &["notes.internal"],
                true,
                vec![rule("support-agent/notes/create_note#0", 1, 0, vec![])],
            ),
            agent(
                "shadow-agent",
                Mode::Shadow,
                &["notes.internal"],
                true,
                vec![rule("shadow-agent/notes/create_note#0", 1, 0, vec![])],
            ),
            agent(
                "files-agent",
                Mode::Enforce,
                &["mcp.files.internal"],
                false,
                vec![rule("files-agent/files/read_file#0", 2, 0, vec![])],
            ),
        ],
        limits: Default::default(),
    }
}

fn bundle_bytes(signed: bool) -> Vec<u8> {
    let key = signing_key();
    compile(&policy(), &BuildOptions::default(), signed.then_some(&key)).unwrap()
}

fn embedded() -> Rc<Bundle> {
    Rc::new(Bundle::load(&bundle_bytes(true), &[]).unwrap())
}

fn configure(config: &str, embedded: Option<&Rc<Bundle>>) -> Result<Shared, String> {
    Shared::configure(
        config.as_bytes(),
        embedded,
        Rc::new(RefCell::new(Metrics::new())),
        Rc::new(RequestIds::new(0xfeed)),
    )
}

fn shared(config: &str) -> Rc<Shared> {
    Rc::new(configure(config, Some(&embedded())).unwrap())
}

#[derive(Debug, Clone, PartialEq)]
struct LocalReply {
    status: u32,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// Envoy's shared data, as one process holds it: give the same `Rc` to
/// several [`Mock`]s to have them play worker VMs of one proxy. Follows
/// Envoy's rules (CAS numbers never 0, a key with no value is written
/// whatever the CAS) and can be told to fail or to let "another VM" write
/// between a read and the next write.
#[derive(Default)]
pub(crate) struct SharedStore {
    map: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    last_cas: Cell<u32>,
    /// The next this many writes with a CAS number fail with a mismatch,
    /// as if another VM had written just before.
    pub(crate) conflicts: Cell<u32>,
    /// Every call fails (a broken host).
    pub(crate) broken: Cell<bool>,
    /// Run once, just before the next write: another VM's whole operation
    /// landing between this VM's read and its write.
    #[allow(clippy::type_complexity)]
    interleave: RefCell<Option<Box<dyn FnOnce()>>>,
    pub(crate) writes: Cell<u32>,
}

impl SharedStore {
    pub(crate) fn interleave(&self, f: impl FnOnce() + 'static) {
        *self.interleave.borrow_mut() = Some(Box::new(f));
    }

    /// Sets a value as an outside writer would (garbage, an old version).
    pub(crate) fn poke(&self, key: &str, value: &[u8]) {
        let cas = self.bump();
        self.map
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), cas));
    }

    pub(crate) fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.map.borrow().get(key).map(|(v, _)| v.clone())
    }

    fn bump(&self) -> u32 {
        let next = self.last_cas.get().wrapping_add(1).max(1);
        self.last_cas.set(next);
        next
    }

    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String> {
        if self.broken.get() {
            return Err("host status InternalFailure".into());
        }
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Stored, String> {
        if self.broken.get() {
            return Err("host status InternalFailure".into());
        }
        let other = self.interleave.borrow_mut().take();
        if let Some(f) = other {
            f();
        }
        let current = self.map.borrow().get(key).map(|(_, c)| *c);
        if let (Some(current), Some(cas)) = (current, cas) {
            if self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                return Ok(Stored::CasMismatch);
            }
            if cas != current {
                return Ok(Stored::CasMismatch);
            }
        }
        let cas = self.bump();
        self.map
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), cas));
        self.writes.set(self.writes.get() + 1);
        Ok(Stored::Written)
    }
}

/// A proxy that records what the filter does.
#[derive(Default)]
pub(crate) struct Mock {
    time: Cell<u64>,
    headers: RefCell<Vec<(String, String)>>,
    body: RefCell<Vec<u8>>,
    replies: RefCell<Vec<LocalReply>>,
    state: RefCell<BTreeMap<String, String>>,
    defined: RefCell<Vec<(MetricKind, String)>>,
    counts: RefCell<BTreeMap<u32, i64>>,
    recorded: RefCell<BTreeMap<u32, Vec<u64>>>,
    logs: RefCell<Vec<(Level, String)>>,
    refuse_body_rewrite: Cell<bool>,
    /// The upstream's response headers, as the filter leaves them.
    response_headers: RefCell<Vec<(String, String)>>,
    response_body: RefCell<Vec<u8>>,
    route_host: RefCell<Option<String>>,
    /// Calls the filter made: cluster, headers, body, timeout.
    calls: RefCell<Vec<MockCall>>,
    /// The answer being delivered to `on_call_response`.
    call_answer: RefCell<CallAnswer>,
    resumed: Cell<u32>,
    shared_data: Rc<SharedStore>,
}

/// A call answer: headers (none for a reset) and body.
type CallAnswer = (Vec<(String, String)>, Vec<u8>);

#[derive(Debug, Clone)]
struct MockCall {
    cluster: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout_ms: u64,
}

impl MockCall {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.body.as_deref().unwrap_or(b"null")).unwrap()
    }
}

impl Mock {
    /// A worker VM of the proxy whose shared data is `store`.
    pub(crate) fn vm(store: &Rc<SharedStore>) -> Mock {
        Mock {
            shared_data: Rc::clone(store),
            ..Mock::default()
        }
    }

    pub(crate) fn logged(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }
}

impl<T: Host + ?Sized> Host for Rc<T> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
    fn log(&self, level: Level, message: &str) {
        (**self).log(level, message)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        (**self).request_headers()
    }
    fn request_body(&self, len: usize) -> Vec<u8> {
        (**self).request_body(len)
    }
    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), String> {
        (**self).replace_request_body(len, body)
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        (**self).set_request_header(name, value)
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        (**self).set_response_header(name, value)
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        (**self).response_headers()
    }
    fn response_body(&self, len: usize) -> Vec<u8> {
        (**self).response_body(len)
    }
    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), String> {
        (**self).replace_response_body(len, body)
    }
    fn route_tool_host(&self) -> Option<String> {
        (**self).route_tool_host()
    }
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String> {
        (**self).send_local_response(status, headers, body)
    }
    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), String> {
        (**self).set_filter_state(key, value)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, String> {
        (**self).define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, by: i64) -> Result<(), String> {
        (**self).increment_metric(id, by)
    }
    fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
        (**self).record_metric(id, value)
    }
    fn dispatch_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, String> {
        (**self).dispatch_call(cluster, headers, body, timeout_ms)
    }
    fn call_response_headers(&self) -> Vec<(String, String)> {
        (**self).call_response_headers()
    }
    fn call_response_body(&self, len: usize) -> Vec<u8> {
        (**self).call_response_body(len)
    }
    fn resume_request(&self) -> Result<(), String> {
        (**self).resume_request()
    }
    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String> {
        (**self).get_shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Stored, String> {
        (**self).set_shared_data(key, value, cas)
    }
}

impl Host for Mock {
    fn now_nanos(&self) -> u64 {
        // Every look at the clock costs 3 us.
        let t = self.time.get().max(T0) + 3_000;
        self.time.set(t);
        t
    }
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.borrow().clone()
    }
    fn request_body(&self, len: usize) -> Vec<u8> {
        let b = self.body.borrow();
        b.get(..len.min(b.len())).unwrap_or_default().to_vec()
    }
    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), String> {
        if self.refuse_body_rewrite.get() {
            return Err("refused".into());
        }
        assert_eq!(len, self.body.borrow().len());
        *self.body.borrow_mut() = body.to_vec();
        Ok(())
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        let mut h = self.headers.borrow_mut();
        h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            h.push((name.to_owned(), v.to_owned()));
        }
        Ok(())
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        let mut h = self.response_headers.borrow_mut();
        h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            h.push((name.to_owned(), v.to_owned()));
        }
        Ok(())
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        self.response_headers.borrow().clone()
    }
    fn response_body(&self, len: usize) -> Vec<u8> {
        let b = self.response_body.borrow();
        b.get(..len.min(b.len())).unwrap_or_default().to_vec()
    }
    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), String> {
        assert_eq!(len, self.response_body.borrow().len());
        *self.response_body.borrow_mut() = body.to_vec();
        Ok(())
    }
    fn route_tool_host(&self) -> Option<String> {
        self.route_host.borrow().clone()
    }
    fn send_local_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String> {
        self.replies.borrow_mut().push(LocalReply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: serde_json::from_slice(body).unwrap(),
        });
        Ok(())
    }
    fn set_filter_state(&self, key: &str, value: &str) -> Result<(), String> {
        self.state
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, String> {
        let mut d = self.defined.borrow_mut();
        assert!(
            !d.iter().any(|(_, n)| n == name),
            "metric `{name}` defined twice"
        );
        d.push((kind, name.to_owned()));
        Ok(u32::try_from(d.len() - 1).unwrap())
    }
    fn increment_metric(&self, id: u32, by: i64) -> Result<(), String> {
        *self.counts.borrow_mut().entry(id).or_default() += by;
        Ok(())
    }
    fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
        self.recorded
            .borrow_mut()
            .entry(id)
            .or_default()
            .push(value);
        Ok(())
    }
    fn dispatch_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Result<u32, String> {
        let mut calls = self.calls.borrow_mut();
        calls.push(MockCall {
            cluster: cluster.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.map(<[u8]>::to_vec),
            timeout_ms,
        });
        Ok(u32::try_from(calls.len()).unwrap())
    }
    fn call_response_headers(&self) -> Vec<(String, String)> {
        self.call_answer.borrow().0.clone()
    }
    fn call_response_body(&self, len: usize) -> Vec<u8> {
        let a = self.call_answer.borrow();
        a.1.get(..len.min(a.1.len())).unwrap_or_default().to_vec()
    }
    fn resume_request(&self) -> Result<(), String> {
        self.resumed.set(self.resumed.get() + 1);
        Ok(())
    }
    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String> {
        self.shared_data.get(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Stored, String> {
        self.shared_data.set(key, value, cas)
    }
}

impl Mock {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn state(&self, key: &str) -> Option<String> {
        self.state.borrow().get(key).cloned()
    }

    fn reply(&self) -> Option<LocalReply> {
        let r = self.replies.borrow();
        assert!(r.len() <= 1, "more than one local reply: {r:?}");
        r.first().cloned()
    }

    /// Value of the counter with exactly this full name.
    fn count(&self, name: &str) -> i64 {
        let d = self.defined.borrow();
        let Some(id) = d.iter().position(|(_, n)| n == name) else {
            return 0;
        };
        self.counts
            .borrow()
            .get(&u32::try_from(id).unwrap())
            .copied()
            .unwrap_or(0)
    }

    fn histogram(&self, name: &str) -> Vec<u64> {
        let d = self.defined.borrow();
        let Some(id) = d
            .iter()
            .position(|(k, n)| n == name && *k == MetricKind::Histogram)
        else {
            return vec![];
        };
        self.recorded
            .borrow()
            .get(&u32::try_from(id).unwrap())
            .cloned()
            .unwrap_or_default()
    }

    /// The last value a gauge was set to.
    fn recorded_value(&self, name: &str) -> Option<u64> {
        let d = self.defined.borrow();
        let id = d
            .iter()
            .position(|(k, n)| n == name && *k == MetricKind::Gauge)?;
        self.recorded
            .borrow()
            .get(&u32::try_from(id).unwrap())
            .and_then(|v| v.last().copied())
    }
}

/// A request as the proxy sees it.
fn request(
    agent: &str,
    method: &str,
    url_host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Rc<Mock> {
    let m = Rc::new(Mock::default());
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), method.into()),
        (":authority".into(), url_host.into()),
        (":path".into(), path.into()),
        (":scheme".into(), "https".into()),
        ("x-aegis-agent".into(), agent.into()),
    ];
    if !body.is_empty() {
        h.push(("content-length".into(), body.len().to_string()));
        // As a client sends it, unless the test says otherwise.
        if !extra.iter().any(|(k, _)| *k == "content-type") {
            let ct = if body.starts_with(b"{") || body.starts_with(b"[") {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            h.push(("content-type".into(), ct.into()));
        }
    }
    h.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    *m.headers.borrow_mut() = h;
    *m.body.borrow_mut() = body.to_vec();
    m
}

/// Drives a whole request: headers, then the body in `chunks` pieces.
fn run(shared: &Rc<Shared>, m: &Rc<Mock>, chunks: usize) -> (Stream<Rc<Mock>>, Vec<Flow>) {
    let mut s = Stream::new(Rc::clone(m), Some(Rc::clone(shared)));
    let len = m.body.borrow().len();
    let mut flows = vec![s.on_request_headers(len == 0)];
    if len > 0 {
        let chunks = chunks.max(1);
        for i in 1..=chunks {
            let upto = if i == chunks { len } else { len * i / chunks };
            flows.push(s.on_request_body(upto, i == chunks));
        }
    }
    (s, flows)
}

#[test]
fn header_only_allow_forwards_untouched() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "GET",
        "api.stripe.com",
        "/v1/customers/cus_1",
        &[("x-request-id", "req-1")],
        b"",
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Continue]);
    assert_eq!(m.reply(), None);
    assert_eq!(m.header(SHADOW_HEADER), None);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    assert_eq!(
        m.state(keys::RULE).as_deref(),
        Some("finance-agent/stripe-payments/get_customer#0")
    );
    assert_eq!(m.state(keys::AGENT).as_deref(), Some("finance-agent"));
    assert_eq!(m.state(keys::TOOL).as_deref(), Some("stripe-payments"));
    assert_eq!(m.state(keys::ACTION).as_deref(), Some("get_customer"));
    assert_eq!(m.state(keys::POLICY_VERSION).as_deref(), Some("test-7"));
    assert_eq!(m.state(keys::REQUEST_ID).as_deref(), Some("req-1"));
    assert_eq!(m.state(keys::MODE).as_deref(), Some("enforce"));
    assert_eq!(
        m.count(
            "agent=.=finance-agent;.;tool=.=stripe-payments;.;decision=.=allow;.;\
             mode=.=enforce;.;aegis_decision_total"
        ),
        1
    );
    // Time inside the filter: two looks at the clock, 3 us apart.
    assert_eq!(m.histogram("aegis_request_latency_us"), [3]);
    assert_eq!(m.histogram("aegis_request_latency_ms"), [0]);
}

#[test]
fn only_the_configured_filter_state_keys_are_written() {
    let req = |sh: &Rc<Shared>| {
        let m = request(
            "finance-agent",
            "GET",
            "api.stripe.com",
            "/v1/customers/cus_1",
            &[("x-request-id", "req-2")],
            b"",
        );
        let (_, flows) = run(sh, &m, 1);
        assert_eq!(flows, [Flow::Continue]);
        m
    };
    let m = req(&shared(
        r#"{"filter_state": ["aegis_request_id", "aegis_decision"]}"#,
    ));
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    assert_eq!(m.state(keys::REQUEST_ID).as_deref(), Some("req-2"));
    for k in keys::ALL {
        if k != keys::DECISION && k != keys::REQUEST_ID {
            assert_eq!(m.state(k), None, "{k}");
        }
    }
    // The metrics do not depend on it.
    assert_eq!(m.histogram("aegis_request_latency_us"), [3]);
    let m = req(&shared(r#"{"filter_state": []}"#));
    for k in keys::ALL {
        assert_eq!(m.state(k), None, "{k}");
    }
    let m = req(&shared(""));
    // A call with no approval and no budget has nothing for those keys.
    let unused = [keys::APPROVAL, keys::APPROVER, keys::BUDGET];
    for k in keys::ALL {
        assert_eq!(m.state(k).is_some(), !unused.contains(&k), "{k} by default");
    }
}

#[test]
fn egress_deny_is_a_local_403_with_the_json_body() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "GET",
        "notes.internal",
        "/notes",
        &[("x-request-id", "req-2")],
        b"",
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Pause]);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 403);
    assert!(r
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    assert!(r.headers.contains(&(DECISION_HEADER.into(), "deny".into())));
    assert_eq!(
        r.body,
        serde_json::json!({
            "decision": "deny",
            "reason": "host `notes.internal` is not in the agent's egress allowlist",
            "rule": null,
            "policy_version": "test-7",
            "request_id": "req-2",
            "error": {
                "type": "permission_error",
                "code": "deny",
                "message": "this call was denied by the aegis policy: host `notes.internal` is not in the agent's egress allowlist",
            },
        })
    );
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("deny"));
    assert_eq!(
        m.state(keys::REASON).as_deref(),
        Some("host `notes.internal` is not in the agent's egress allowlist")
    );
    assert_eq!(m.state(keys::RULE), None);
    assert_eq!(
        m.count(
            "agent=.=finance-agent;.;tool=.=-;.;rule=.=-;.;decision=.=deny;.;\
             mode=.=enforce;.;aegis_policy_violation_total"
        ),
        1
    );
}

#[test]
fn unauthenticated_requests_are_denied_without_agent() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "GET",
        "api.stripe.com",
        "/v1/customers/x",
        &[],
        b"",
    );
    m.headers.borrow_mut().retain(|(k, _)| k != "x-aegis-agent");
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Pause]);
    assert_eq!(m.reply().unwrap().status, 403);
    assert_eq!(m.state(keys::AGENT), None);
    assert_eq!(
        m.count("agent=.=-;.;tool=.=-;.;decision=.=deny;.;mode=.=enforce;.;aegis_decision_total"),
        1
    );
    // No x-request-id: one is generated.
    let id = m.state(keys::REQUEST_ID).unwrap();
    assert!(
        id.starts_with("aegis-") && id.ends_with("-0000feed-0"),
        "{id}"
    );
    assert_eq!(m.reply().unwrap().body["request_id"], id.as_str());
}

#[test]
fn body_decision_allows_after_buffering() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[],
        b"amount=1200&currency=usd",
    );
    let (_, flows) = run(&sh, &m, 3);
    // Headers forwarded (Envoy without allow_on_headers_stop_iteration),
    // body held until the end, then released.
    assert_eq!(
        flows,
        [Flow::Continue, Flow::Pause, Flow::Pause, Flow::Continue]
    );
    assert_eq!(m.reply(), None);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    // No DLP for this agent: the body cannot change, content-length stays.
    assert_eq!(m.header("content-length").as_deref(), Some("24"));
    assert_eq!(m.body.borrow().as_slice(), b"amount=1200&currency=usd");
    // Latency is the time inside the callbacks that judge: the headers and
    // the last chunk, 3 us each (the chunk in between is only counted,
    // without a look at the clock).
    assert_eq!(m.histogram("aegis_request_latency_us"), [6]);
}

#[test]
fn headers_are_held_when_envoy_allows_it() {
    let sh = shared(r#"{"allow_on_headers_stop_iteration": true}"#);
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[],
        b"amount=1200",
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Pause, Flow::Continue]);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
}

#[test]
fn failed_condition_asks_for_approval() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[("x-request-id", "r-9")],
        b"amount=9000",
    );
    let (mut s, flows) = run(&sh, &m, 2);
    assert_eq!(flows, [Flow::Continue, Flow::Pause, Flow::Pause]);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 403);
    assert!(r
        .headers
        .contains(&(DECISION_HEADER.into(), "approval_needed".into())));
    assert_eq!(r.body["decision"], "approval_needed");
    assert_eq!(
        r.body["rule"],
        "finance-agent/stripe-payments/create_payment#0"
    );
    assert_eq!(
        r.body["reason"],
        "condition failed: `amount` must be a number <= 5000"
    );
    // The body is never released once the request is answered locally.
    assert_eq!(s.on_request_body(11, true), Flow::Pause);
    assert_eq!(s.on_request_trailers(), Flow::Pause);
    assert_eq!(
        m.count(
            "agent=.=finance-agent;.;tool=.=stripe-payments;.;\
             rule=.=finance-agent/stripe-payments/create_payment#0;.;\
             decision=.=approval_needed;.;mode=.=enforce;.;aegis_policy_violation_total"
        ),
        1
    );
}

#[test]
fn dlp_sanitizes_the_body_and_drops_content_length() {
    let sh = shared("");
    let body = br#"{"text":"customer ssn 123-45-6789, mail jo@example.com"}"#;
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    let mut s = Stream::new(Rc::clone(&m), Some(Rc::clone(&sh)));
    assert_eq!(s.on_request_headers(false), Flow::Continue);
    // Dropped in the headers callback: the headers may leave before the
    // body is judged.
    assert_eq!(m.header("content-length"), None);
    assert_eq!(s.on_request_body(body.len(), true), Flow::Continue);
    assert_eq!(m.reply(), None);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("sanitize"));
    let out = String::from_utf8(m.body.borrow().clone()).unwrap();
    assert_eq!(
        out,
        r#"{"text":"customer ssn [REDACTED:ssn], mail [REDACTED:email]"}"#
    );
    let reason = m.state(keys::REASON).unwrap();
    assert!(
        reason.contains("ssn: 1") && reason.contains("email: 1"),
        "{reason}"
    );
}

#[test]
fn held_headers_keep_content_length_and_get_the_new_one() {
    let sh = shared(r#"{"allow_on_headers_stop_iteration": true}"#);
    let body = br#"{"text":"customer ssn 123-45-6789"}"#;
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    let (_, flows) = run(&sh, &m, 2);
    assert_eq!(flows, [Flow::Pause, Flow::Pause, Flow::Continue]);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("sanitize"));
    let out = m.body.borrow().clone();
    assert_eq!(out, br#"{"text":"customer ssn [REDACTED:ssn]"}"#);
    assert_eq!(
        m.header("content-length"),
        Some(out.len().to_string()),
        "the new length goes with the new body"
    );

    // A clean body keeps the length it was sent with.
    let clean = br#"{"text":"nothing to see"}"#;
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        clean,
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Pause, Flow::Continue]);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    assert_eq!(m.header("content-length"), Some(clean.len().to_string()));
}

#[test]
fn clean_dlp_body_is_forwarded_untouched() {
    let sh = shared("");
    let body = br#"{"text":"nothing to see"}"#;
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Continue, Flow::Continue]);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    assert_eq!(m.body.borrow().as_slice(), body);
}

#[test]
fn a_body_that_cannot_be_rewritten_is_refused() {
    let sh = shared("");
    let body = br#"{"text":"ssn 123-45-6789"}"#;
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    m.refuse_body_rewrite.set(true);
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Continue, Flow::Pause]);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(
        r.body["reason"],
        "internal error: cannot rewrite the request body: refused"
    );
    assert!(m.logs.borrow().iter().any(|(l, _)| *l == Level::Error));
}

#[test]
fn malformed_json_body_is_denied() {
    let sh = shared("");
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        br#"{"text": "#,
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Continue, Flow::Pause]);
    let r = m.reply().unwrap();
    assert_eq!((r.status, r.body["decision"].as_str()), (403, Some("deny")));
}

#[test]
fn oversized_body_is_413() {
    let sh = shared(r#"{"max_body_bytes": 16}"#);
    // Declared too large: refused in the headers callback, nothing buffered.
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[],
        b"amount=1200&currency=usd",
    );
    let mut s = Stream::new(Rc::clone(&m), Some(Rc::clone(&sh)));
    assert_eq!(s.on_request_headers(false), Flow::Pause);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(
        r.body["reason"],
        "request body is larger than the 16 bytes accepted (`max_body_bytes`)"
    );
    assert_eq!(s.on_request_body(24, true), Flow::Pause);

    // No content-length (chunked): refused as soon as the buffer is over.
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[],
        b"amount=1200&currency=usd",
    );
    m.headers
        .borrow_mut()
        .retain(|(k, _)| k != "content-length");
    let mut s = Stream::new(Rc::clone(&m), Some(Rc::clone(&sh)));
    assert_eq!(s.on_request_headers(false), Flow::Continue);
    assert_eq!(s.on_request_body(10, false), Flow::Pause);
    assert_eq!(m.reply(), None);
    assert_eq!(s.on_request_body(17, false), Flow::Pause);
    assert_eq!(m.reply().unwrap().status, 413);
    assert_eq!(s.on_request_body(24, true), Flow::Pause);
    assert_eq!(m.state(keys::AGENT).as_deref(), Some("finance-agent"));
    assert_eq!(m.state(keys::ACTION).as_deref(), Some("create_payment"));
}

#[test]
fn trailers_end_the_body() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[],
        b"amount=9000",
    );
    let mut s = Stream::new(Rc::clone(&m), Some(Rc::clone(&sh)));
    assert_eq!(s.on_request_headers(false), Flow::Continue);
    assert_eq!(s.on_request_body(11, false), Flow::Pause);
    assert_eq!(s.on_request_trailers(), Flow::Pause);
    assert_eq!(m.reply().unwrap().body["decision"], "approval_needed");
}

#[test]
fn shadow_mode_never_blocks() {
    let sh = shared("");
    // Decided on headers: the header is added, the request goes on.
    let m = request(
        "shadow-agent",
        "GET",
        "api.stripe.com",
        "/v1/customers/x",
        &[],
        b"",
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Continue]);
    assert_eq!(m.reply(), None);
    assert_eq!(m.header(SHADOW_HEADER).as_deref(), Some("deny"));
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("deny"));
    assert_eq!(m.state(keys::MODE).as_deref(), Some("shadow"));
    assert_eq!(
        m.count(
            "agent=.=shadow-agent;.;tool=.=-;.;decision=.=deny;.;mode=.=shadow;.;\
             aegis_decision_total"
        ),
        1
    );

    // Decided on the body with the headers already upstream: nothing is
    // rewritten, no header can be added, filter state has the verdict.
    let body = br#"{"text":"ssn 123-45-6789"}"#;
    let m = request(
        "shadow-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    let (_, flows) = run(&sh, &m, 1);
    assert_eq!(flows, [Flow::Continue, Flow::Continue]);
    assert_eq!(m.header("content-length").as_deref(), Some("26"));
    assert_eq!(m.body.borrow().as_slice(), body);
    assert_eq!(m.header(SHADOW_HEADER), None);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("sanitize"));

    // Headers held: the body-phase verdict reaches the header too.
    let held = shared(r#"{"allow_on_headers_stop_iteration": true}"#);
    let m = request(
        "shadow-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    let (_, flows) = run(&held, &m, 1);
    assert_eq!(flows, [Flow::Pause, Flow::Continue]);
    assert_eq!(m.header(SHADOW_HEADER).as_deref(), Some("sanitize"));
    assert_eq!(m.body.borrow().as_slice(), body);

    // Over the body limit: recorded as a deny, still forwarded.
    let small = shared(r#"{"max_body_bytes": 8}"#);
    let m = request(
        "shadow-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        body,
    );
    m.headers
        .borrow_mut()
        .retain(|(k, _)| k != "content-length");
    let (_, flows) = run(&small, &m, 2);
    assert_eq!(flows, [Flow::Continue, Flow::Continue, Flow::Continue]);
    assert_eq!(m.reply(), None);
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("deny"));
}

#[test]
fn unconfigured_filter_refuses_everything() {
    let m = request(
        "finance-agent",
        "GET",
        "api.stripe.com",
        "/v1/customers/x",
        &[("x-request-id", "r-0")],
        b"",
    );
    let mut s = Stream::new(Rc::clone(&m), None);
    assert_eq!(s.on_request_headers(true), Flow::Pause);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(r.body["policy_version"], serde_json::Value::Null);
    assert_eq!(r.body["request_id"], "r-0");
}

#[test]
fn metrics_are_defined_once_per_label_set() {
    let sh = shared("");
    for _ in 0..3 {
        let m = request(
            "finance-agent",
            "GET",
            "api.stripe.com",
            "/v1/customers/c",
            &[],
            b"",
        );
        run(&sh, &m, 1);
    }
    // decision_total + two latency histograms, whatever the request count.
    assert_eq!(sh.metrics.borrow().len(), 3);
}

#[test]
fn configuration_picks_and_checks_the_bundle() {
    let emb = embedded();
    let signer = STANDARD.encode(signing_key().verifying_key().to_bytes());
    let other = STANDARD.encode(
        SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes(),
    );

    // Embedded, with and without trusted keys.
    let s = configure("", Some(&emb)).unwrap();
    assert_eq!(s.source.as_str(), "embedded");
    assert!(
        s.summary().contains("policy `test-7` (4 agents"),
        "{}",
        s.summary()
    );
    let ok = format!(r#"{{"trusted_keys": ["{signer}"]}}"#);
    assert!(configure(&ok, Some(&emb)).is_ok());
    let bad = format!(r#"{{"trusted_keys": ["{other}"]}}"#);
    assert_eq!(
        configure(&bad, Some(&emb)).unwrap_err(),
        "cannot use the embedded bundle: bundle is signed by a key that is not trusted"
    );

    // A bundle in the configuration wins over the embedded one.
    let unsigned = STANDARD.encode(bundle_bytes(false));
    let s = configure(&format!(r#"{{"bundle": "{unsigned}"}}"#), Some(&emb)).unwrap();
    assert_eq!(s.source.as_str(), "configuration");
    assert!(s.summary().contains("unsigned"));
    assert_eq!(
        configure(
            &format!(r#"{{"bundle": "{unsigned}", "trusted_keys": ["{signer}"]}}"#),
            None
        )
        .unwrap_err(),
        "cannot load the bundle from the configuration: bundle is not signed but trusted keys \
         are configured"
    );
    let mut tampered = bundle_bytes(true);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e = configure(
        &format!(r#"{{"bundle": "{}"}}"#, STANDARD.encode(tampered)),
        None,
    )
    .unwrap_err();
    assert_eq!(
        e,
        "cannot load the bundle from the configuration: bundle signature is invalid"
    );

    // Nothing to load, or a bad key.
    assert!(configure("", None)
        .unwrap_err()
        .starts_with("no policy bundle"));
    let e = configure(r#"{"trusted": []}"#, Some(&emb)).unwrap_err();
    assert!(
        e.starts_with("invalid plugin configuration: unknown field `trusted`"),
        "{e}"
    );
}

/// A body announced as empty is judged at the headers: in Istio mode the
/// headers go upstream at once, and with `content-length: 0` the upstream
/// would hold a complete request before a body-phase verdict.
#[test]
fn empty_declared_body_is_judged_at_the_headers() {
    let sh = shared("");
    let m = request(
        "finance-agent",
        "POST",
        "api.stripe.com",
        "/v1/payment_intents",
        &[
            ("content-length", "0"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"",
    );
    let mut s = Stream::new(Rc::clone(&m), Some(Rc::clone(&sh)));
    // Not the end of the stream: an empty DATA frame follows.
    assert_eq!(s.on_request_headers(false), Flow::Pause);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.body["decision"], "approval_needed");
    assert_eq!(r.body["reason"], "condition failed: `amount` is missing");
    assert_eq!(s.on_request_body(0, true), Flow::Pause);
}

#[test]
fn the_agent_credential_never_goes_upstream() {
    let sh = shared("");
    for (path, want) in [
        ("/v1/customers/cus_1", Flow::Continue),
        ("/v1/refunds", Flow::Pause),
    ] {
        let m = request(
            "finance-agent",
            "GET",
            "api.stripe.com",
            path,
            &[("authorization", "Bearer sk_live_x")],
            b"",
        );
        let (_, flows) = run(&sh, &m, 1);
        assert_eq!(flows, [want], "{path}");
        // Insecure mode: the agent headers are the credential. A header the
        // identity does not read (the client's own key) stays.
        assert_eq!(m.header("x-aegis-agent"), None, "{path}");
        assert_eq!(
            m.header("authorization").as_deref(),
            Some("Bearer sk_live_x")
        );
    }
}

#[test]
fn a_route_bound_to_a_tool_host_is_judged_as_that_host() {
    let sh = shared(r#"{"tool_host_from_route": true}"#);
    let send = |sh: &Rc<Shared>, bound: Option<&str>| {
        let m = request(
            "finance-agent",
            "GET",
            "127.0.0.1:10001",
            "/v1/customers/cus_1",
            &[],
            b"",
        );
        *m.route_host.borrow_mut() = bound.map(str::to_owned);
        let (_, flows) = run(sh, &m, 1);
        (m, flows)
    };
    let (m, flows) = send(&sh, None);
    assert_eq!(flows, [Flow::Pause]);
    assert_eq!(
        m.reply().unwrap().body["reason"],
        "host `127.0.0.1` is not in the agent's egress allowlist"
    );

    let (m, flows) = send(&sh, Some("api.stripe.com"));
    assert_eq!(flows, [Flow::Continue]);
    assert_eq!(m.reply(), None);
    assert_eq!(
        m.state(keys::RULE).as_deref(),
        Some("finance-agent/stripe-payments/get_customer#0")
    );

    // A listener that does not bind routes never reads them.
    let (m, flows) = send(&shared(""), Some("api.stripe.com"));
    assert_eq!(flows, [Flow::Pause]);
    assert!(m.reply().is_some());
}

#[test]
fn sanitized_and_shadowed_calls_say_so_on_the_response() {
    let sh = shared("");
    let body = br#"{"text":"customer ssn 123-45-6789"}"#;
    for (agent, decision, shadow) in [
        ("support-agent", "sanitize", None),
        ("shadow-agent", "allow", Some("sanitize")),
    ] {
        let m = request(agent, "POST", "notes.internal", "/notes", &[], body);
        let (mut s, _) = run(&sh, &m, 1);
        assert_eq!(m.reply(), None);
        assert!(m.response_headers.borrow().is_empty());
        assert_eq!(s.on_response_headers(), Flow::Continue);
        let mut want = vec![(DECISION_HEADER.to_owned(), decision.to_owned())];
        if let Some(v) = shadow {
            want.push((SHADOW_HEADER.to_owned(), v.to_owned()));
        }
        assert_eq!(*m.response_headers.borrow(), want, "{agent}");
    }
    // A plain allow leaves the response alone.
    let m = request(
        "support-agent",
        "POST",
        "notes.internal",
        "/notes",
        &[],
        br#"{"text":"hello"}"#,
    );
    let (mut s, _) = run(&sh, &m, 1);
    s.on_response_headers();
    assert!(m.response_headers.borrow().is_empty());
}

fn mcp(m_body: &str) -> Rc<Mock> {
    request(
        "files-agent",
        "POST",
        "mcp.files.internal",
        "/mcp",
        &[("x-request-id", "req-m")],
        m_body.as_bytes(),
    )
}

#[test]
fn a_refused_mcp_tool_call_is_a_tool_error_for_its_request() {
    let sh = shared("");
    let m = mcp(
        r#"{"jsonrpc":"2.0","id":"call-7","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/"}}}"#,
    );
    run(&sh, &m, 1);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers.contains(&(DECISION_HEADER.into(), "deny".into())));
    assert_eq!(r.body["jsonrpc"], "2.0");
    assert_eq!(r.body["id"], "call-7");
    assert_eq!(r.body["result"]["isError"], true);
    assert_eq!(
        r.body["result"]["content"][0]["text"],
        "this call was denied by the aegis policy: agent may not call `delete_file` on `files` (default deny)"
    );
    assert_eq!(r.body["result"]["_meta"]["aegis"]["decision"], "deny");
    assert_eq!(r.body["result"]["_meta"]["aegis"]["request_id"], "req-m");

    // The allowed tool goes through.
    let m = mcp(
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/a"}}}"#,
    );
    run(&sh, &m, 1);
    assert_eq!(m.reply(), None);
}

#[test]
fn a_refused_mcp_message_is_a_json_rpc_error_for_its_id() {
    let sh = shared("");
    let m = mcp(r#"{"jsonrpc":"2.0","id":12,"method":"sampling/createMessage","params":{}}"#);
    run(&sh, &m, 1);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], 12);
    assert_eq!(r.body["error"]["code"], -32601);
    assert_eq!(
        r.body["error"]["data"]["reason"],
        "mcp method is not allowed"
    );

    // No id to answer (a batch): a JSON-RPC error for `null`, with the
    // status of the refusal.
    let m = mcp(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
    run(&sh, &m, 1);
    let r = m.reply().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.body["id"], serde_json::Value::Null);
    assert_eq!(r.body["error"]["code"], -32600);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("batches are not accepted"));
}

#[test]
fn mcp_protocol_plumbing_passes() {
    let sh = shared("");
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/list"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
        r#"{"jsonrpc":"2.0","id":0,"result":{"action":"accept","content":{"ok":true}}}"#,
    ] {
        let m = mcp(body);
        run(&sh, &m, 1);
        assert_eq!(m.reply(), None, "{body}");
        assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"), "{body}");
    }
    for (method, session, allowed) in [
        ("GET", true, true),
        ("DELETE", true, true),
        ("GET", false, false),
        ("PUT", true, false),
    ] {
        let extra: &[(&str, &str)] = if session {
            &[("mcp-session-id", "s-1")]
        } else {
            &[]
        };
        let m = request(
            "files-agent",
            method,
            "mcp.files.internal",
            "/mcp",
            extra,
            b"",
        );
        run(&sh, &m, 1);
        assert_eq!(m.reply().is_none(), allowed, "{method} {session}");
    }
}

// --- tools/list answers ---------------------------------------------------

const TOOLS_LIST: &[u8] = br#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#;

fn tools_answer(cursor: bool) -> String {
    let mut result = serde_json::json!({"tools": [
        {"name": "read_file", "description": "Read a file", "inputSchema": {"type": "object"}},
        {"name": "delete_file", "description": "Delete a file", "inputSchema": {"type": "object"}},
        {"name": "exec", "inputSchema": {"type": "object"}},
    ]});
    if cursor {
        result["nextCursor"] = "c2".into();
    }
    serde_json::json!({"jsonrpc": "2.0", "id": 5, "result": result}).to_string()
}

/// An allowed `tools/list` by `files-agent`, then the server's answer with
/// these headers and body, delivered in two chunks.
fn list_answer(
    config: &str,
    response_headers: &[(&str, &str)],
    body: &str,
) -> (Rc<Mock>, Vec<Flow>) {
    let sh = shared(config);
    let m = request(
        "files-agent",
        "POST",
        "mcp.files.internal",
        "/mcp",
        &[],
        TOOLS_LIST,
    );
    m.headers
        .borrow_mut()
        .push(("accept-encoding".into(), "gzip, br".into()));
    let (mut s, flows) = run(&sh, &m, 1);
    assert_eq!(flows.last(), Some(&Flow::Continue));
    assert_eq!(m.state(keys::DECISION).as_deref(), Some("allow"));
    *m.response_headers.borrow_mut() = response_headers
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    *m.response_body.borrow_mut() = body.as_bytes().to_vec();
    let mut flows = vec![s.on_response_headers()];
    let half = body.len() / 2;
    flows.push(s.on_response_body(half, false));
    flows.push(s.on_response_body(body.len(), true));
    (m, flows)
}

fn listed(m: &Mock) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&m.response_body.borrow()).unwrap();
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

const JSON_200: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-type", "application/json"),
    ("content-length", "999"),
];

#[test]
fn a_tools_list_answer_shows_only_the_callable_tools() {
    let (m, flows) = list_answer("{}", JSON_200, &tools_answer(true));
    assert_eq!(flows, [Flow::Continue, Flow::Pause, Flow::Continue]);
    assert_eq!(listed(&m), ["read_file"]);
    let v: serde_json::Value = serde_json::from_slice(&m.response_body.borrow()).unwrap();
    assert_eq!(v["result"]["nextCursor"], "c2");
    assert_eq!(v["id"], 5);
    // The length changed: Envoy frames the new body itself.
    assert!(!m
        .response_headers
        .borrow()
        .iter()
        .any(|(k, _)| k == "content-length"));
    assert_eq!(
        m.count(&metrics::tagged_name(
            metrics::TOOLS_LIST_TOTAL,
            &[("tool", "files"), ("outcome", "filtered")]
        )),
        1
    );
    // Headers forwarded before the body is judged: `accept-encoding` is
    // already upstream and stays.
    assert_eq!(m.header("accept-encoding").as_deref(), Some("gzip, br"));
}

#[test]
fn held_headers_lose_accept_encoding_so_the_answer_is_readable() {
    let (m, _) = list_answer(
        r#"{"allow_on_headers_stop_iteration": true}"#,
        JSON_200,
        &tools_answer(false),
    );
    assert_eq!(m.header("accept-encoding"), None);
    assert_eq!(listed(&m), ["read_file"]);
}

#[test]
fn a_single_message_event_stream_is_filtered() {
    let sse = format!("event: message\ndata: {}\n\n", tools_answer(false));
    let (m, _) = list_answer(
        "{}",
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &sse,
    );
    let out = String::from_utf8(m.response_body.borrow().clone()).unwrap();
    assert!(out.starts_with("event: message\ndata: {"), "{out}");
    assert!(!out.contains("delete_file"), "{out}");
    assert!(out.contains("read_file"), "{out}");
}

#[test]
fn answers_the_filter_cannot_read_pass_unchanged_and_are_counted() {
    let unfiltered = metrics::tagged_name(
        metrics::TOOLS_LIST_TOTAL,
        &[("tool", "files"), ("outcome", "unfiltered")],
    );
    let answer = tools_answer(false);
    for (headers, body) in [
        (JSON_200, "{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":"),
        (
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ][..],
            answer.as_str(),
        ),
        (
            &[(":status", "200"), ("content-type", "text/html")][..],
            answer.as_str(),
        ),
    ] {
        let (m, flows) = list_answer("{}", headers, body);
        assert!(!flows.contains(&Flow::Pause) || flows.last() == Some(&Flow::Continue));
        assert_eq!(*m.response_body.borrow(), body.as_bytes(), "{headers:?}");
        assert_eq!(m.count(&unfiltered), 1, "{headers:?}");
        assert!(
            m.logs
                .borrow()
                .iter()
                .any(|(l, msg)| *l == Level::Warn && msg.contains("passed unfiltered")),
            "{:?}",
            m.logs.borrow()
        );
    }
    // Larger than `max_body_bytes`: not buffered further, passed as sent.
    let big = format!("{}{}", tools_answer(false), " ".repeat(200));
    let (m, flows) = list_answer(r#"{"max_body_bytes": 300}"#, JSON_200, &big);
    assert_eq!(flows, [Flow::Continue, Flow::Pause, Flow::Continue]);
    assert_eq!(*m.response_body.borrow(), big.as_bytes());
    assert_eq!(m.count(&unfiltered), 1);
}

#[test]
fn error_answers_and_other_requests_are_not_touched() {
    // An error status is not a list.
    let (m, flows) = list_answer(
        "{}",
        &[(":status", "500"), ("content-type", "application/json")],
        "{}",
    );
    assert_eq!(flows, [Flow::Continue; 3]);
    assert!(m
        .defined
        .borrow()
        .iter()
        .all(|(_, n)| !n.contains("tools_list")));
    // A tool call's answer is never buffered.
    let sh = shared("{}");
    let call = br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"read_file","arguments":{}}}"#;
    let m = request(
        "files-agent",
        "POST",
        "mcp.files.internal",
        "/mcp",
        &[],
        call,
    );
    let (mut s, _) = run(&sh, &m, 1);
    *m.response_headers.borrow_mut() = JSON_200
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    assert_eq!(s.on_response_headers(), Flow::Continue);
    assert_eq!(s.on_response_body(10, false), Flow::Continue);
    assert!(m
        .response_headers
        .borrow()
        .iter()
        .any(|(k, _)| k == "content-length"));
}

#[test]
fn a_deny_the_headers_decide_is_answered_before_any_body() {
    let sh = shared("");
    let body = br#"{"amount":1}"#;
    for (agent, host, path, why) in [
        (
            "nobody",
            "api.stripe.com",
            "/v1/payment_intents",
            "unknown agent",
        ),
        ("finance-agent", "notes.internal", "/notes", "egress"),
        ("finance-agent", "api.stripe.com", "/v1/refunds", "route"),
        ("finance-agent", "mcp.files.internal", "/mcp", "mcp egress"),
    ] {
        let m = request(agent, "POST", host, path, &[], body);
        let mut s = Stream::new(Rc::clone(&m), Some(Rc::clone(&sh)));
        assert_eq!(s.on_request_headers(false), Flow::Pause, "{why}");
        let r = m
            .reply()
            .unwrap_or_else(|| panic!("{why}: no reply in the headers callback"));
        assert_eq!(r.status, 403, "{why}");
        // What follows of the body is held and never judged.
        assert_eq!(s.on_request_body(body.len(), true), Flow::Pause, "{why}");
        assert_eq!(m.replies.borrow().len(), 1, "{why}");
    }
}

mod gate;
mod reload;
