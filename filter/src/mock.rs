//! A proxy that records what the filter does, for the unit tests: the
//! host calls of one worker VM, and the shared data of the VMs of one
//! proxy (`SharedStore`), which can be made to fail or to lose races.

use crate::host::{Host, Level, MetricKind, Stored};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// The mock clock's start: 2023-11-14 22:13:20 UTC.
pub(crate) const T0: u64 = 1_700_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalReply {
    pub(crate) status: u32,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: serde_json::Value,
}

/// Envoy's shared data, as one process holds it: give the same `Rc` to
/// several [`Mock`]s to have them play worker VMs of one proxy. Follows
/// Envoy's rules (CAS numbers never 0, a key with no value is written
/// whatever the CAS) and can be told to fail or to let "another VM" write
/// between a read and the next write.
#[derive(Default)]
pub(crate) struct SharedStore {
    pub(crate) map: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    pub(crate) last_cas: Cell<u32>,
    /// The next this many writes with a CAS number fail with a mismatch,
    /// as if another VM had written just before.
    pub(crate) conflicts: Cell<u32>,
    /// Every call fails (a broken host).
    pub(crate) broken: Cell<bool>,
    /// Run once, just before the next write: another VM's whole operation
    /// landing between this VM's read and its write.
    #[allow(clippy::type_complexity)]
    pub(crate) interleave: RefCell<Option<Box<dyn FnOnce()>>>,
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
    pub(crate) time: Cell<u64>,
    pub(crate) headers: RefCell<Vec<(String, String)>>,
    pub(crate) body: RefCell<Vec<u8>>,
    pub(crate) replies: RefCell<Vec<LocalReply>>,
    pub(crate) state: RefCell<BTreeMap<String, String>>,
    pub(crate) defined: RefCell<Vec<(MetricKind, String)>>,
    pub(crate) counts: RefCell<BTreeMap<u32, i64>>,
    pub(crate) recorded: RefCell<BTreeMap<u32, Vec<u64>>>,
    pub(crate) logs: RefCell<Vec<(Level, String)>>,
    pub(crate) refuse_body_rewrite: Cell<bool>,
    /// The upstream's response headers, as the filter leaves them.
    pub(crate) response_headers: RefCell<Vec<(String, String)>>,
    pub(crate) response_body: RefCell<Vec<u8>>,
    pub(crate) route_host: RefCell<Option<String>>,
    /// Calls the filter made: cluster, headers, body, timeout.
    pub(crate) calls: RefCell<Vec<MockCall>>,
    /// The answer being delivered to `on_call_response`.
    pub(crate) call_answer: RefCell<CallAnswer>,
    pub(crate) resumed: Cell<u32>,
    pub(crate) shared_data: Rc<SharedStore>,
}

/// A call answer: headers (none for a reset) and body.
pub(crate) type CallAnswer = (Vec<(String, String)>, Vec<u8>);

#[derive(Debug, Clone)]
pub(crate) struct MockCall {
    pub(crate) cluster: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) timeout_ms: u64,
}

impl MockCall {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn json(&self) -> serde_json::Value {
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
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn state(&self, key: &str) -> Option<String> {
        self.state.borrow().get(key).cloned()
    }

    pub(crate) fn reply(&self) -> Option<LocalReply> {
        let r = self.replies.borrow();
        assert!(r.len() <= 1, "more than one local reply: {r:?}");
        r.first().cloned()
    }

    /// Value of the counter with exactly this full name.
    pub(crate) fn count(&self, name: &str) -> i64 {
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

    pub(crate) fn histogram(&self, name: &str) -> Vec<u64> {
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
    pub(crate) fn recorded_value(&self, name: &str) -> Option<u64> {
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
