//! After the policy: the stages that need state beyond one request. An
//! enforced call the policy let through (or that needs approval) passes
//! them in this order:
//!
//! 1. approval: a call that needs one creates it at the control plane, and
//!    is held while a person decides (`approval_hold_ms`) or answered at
//!    once with the approval's id; a retry with `x-aegis-approval: <id>`
//!    redeems it (once, for the same call: the digest must match); a
//!    retry whose approval is not decided yet asks for it again and is
//!    held or answered like the first call;
//! 2. budget and rate, for the call about to go upstream (see `budget`
//!    and `rate`).
//!
//! Each call to the control plane pauses the request; its answer resumes
//! the stage. A call that fails (no answer, Envoy's timeout, an answer the
//! API does not promise) goes by the fail policy: writes refused, reads
//! let through, unless configured otherwise. Nothing here traps, and no
//! request waits longer than the hold time plus one call timeout.

use super::{Final, Phase, State, Stream};
use crate::budget::{self, Grant, Install, NeedLease, Spend};
use crate::callout::{self, Call, Failure, NewApproval, Redeemed, Status, Summary};
use crate::config::{ControlPlane, OnFailure};
use crate::host::{Host, Level};
use crate::kv::AgentRef;
use crate::metrics::{self, NONE};
use crate::rate::{self, Take, Why};
use crate::reply::{ApprovalRef, Shape};
use crate::shared::Shared;
use aegis_engine::digest::to_hex;
use aegis_engine::{Decision, Mode, Reason, Request, Routed, Verdict};
use std::rc::Rc;

/// Header of an agent's retry that redeems an approval.
pub const APPROVAL_HEADER: &str = "x-aegis-approval";

/// Longest single long-poll of an approval's status (the control plane's
/// own limit).
const MAX_WAIT_S: u64 = 60;

/// An outcome kept across calls to the control plane: a [`Final`] with
/// owned text, and the cost of the call.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    verdict: Verdict,
    reason: String,
    agent: Option<String>,
    tool: Option<String>,
    action: Option<String>,
    rule: Option<String>,
    status: u32,
    shape: Shape,
    rpc_id: Option<Vec<u8>>,
    cost_usd: Option<f64>,
}

impl Kept {
    fn of(f: &Final<'_>, cost_usd: Option<f64>) -> Kept {
        Kept {
            verdict: f.verdict,
            reason: f.reason.clone(),
            agent: f.agent.map(str::to_owned),
            tool: f.tool.map(str::to_owned),
            action: f.action.map(str::to_owned),
            rule: f.rule.map(str::to_owned),
            status: f.status,
            shape: f.shape,
            rpc_id: f.rpc_id.map(<[u8]>::to_vec),
            cost_usd,
        }
    }

    fn as_final<'a>(&'a self, request_id: &'a str) -> Final<'a> {
        Final {
            verdict: self.verdict,
            reason: self.reason.clone(),
            agent: self.agent.as_deref(),
            tool: self.tool.as_deref(),
            action: self.action.as_deref(),
            rule: self.rule.as_deref(),
            shadow: false,
            status: self.status,
            request_id,
            shape: self.shape,
            rpc_id: self.rpc_id.as_deref(),
            approval: None,
            retry_after: None,
            approval_id: None,
            approver: None,
            budget: None,
        }
    }
}

/// The lease a held request waits for.
#[derive(Debug, Clone)]
struct LeaseAsk {
    agent: AgentRef,
    need: NeedLease,
    /// The call's cost, micro-dollars.
    cost: u64,
    /// The agent's `budget.daily_usd`, for the refusal.
    daily_usd: f64,
}

/// What a held request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Poll,
    Redeem,
    Lease,
}

/// The approval a held request is about.
#[derive(Debug, Clone)]
struct Approval {
    id: String,
    url: String,
    expires_at: i64,
    digest: String,
    /// Hold the request until then (Unix nanoseconds); 0: do not hold.
    hold_until: u64,
}

/// A request paused for a call to the control plane.
pub(super) struct Held {
    token: u32,
    step: Step,
    route: Routed,
    phase: Phase,
    request_id: String,
    write: bool,
    /// The policy's outcome (`approval_needed`), for the answers that keep
    /// it.
    kept: Kept,
    approval: Approval,
    /// Who approved the call, once someone has.
    approver: Option<String>,
    /// The call that asks for this call's approval, kept for a retry
    /// whose approval is not decided yet: asking again answers with the
    /// pending approval (its status URL and expiry).
    create: Option<Call>,
    lease: Option<LeaseAsk>,
}

impl Held {
    fn new(route: &Routed, cx: &Ctx<'_>, write: bool, kept: Kept) -> Held {
        Held {
            token: 0,
            step: Step::Create,
            route: *route,
            phase: cx.phase,
            request_id: cx.request_id.to_owned(),
            write,
            kept,
            approval: Approval {
                id: String::new(),
                url: String::new(),
                expires_at: 0,
                digest: String::new(),
                hold_until: 0,
            },
            approver: None,
            lease: None,
            create: None,
        }
    }
}

/// What the gate needs of the request beyond the decision.
pub(super) struct Ctx<'r> {
    pub phase: Phase,
    pub headers: &'r [(String, String)],
    pub body: &'r [u8],
    pub request_id: &'r str,
    pub t0: u64,
}

fn find<'h, 'n>(
    headers: &'h [(String, String)],
    name: &'n str,
) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a call of this cost, by the route's agent, spends from a budget
/// here: a control plane, a `budget.daily_usd`, and a cost above zero.
fn metered(shared: &Shared, route: &Routed, cost_usd: Option<f64>) -> bool {
    shared.control.is_some()
        && cost_usd.is_some_and(|c| c > 0.0)
        && shared
            .bundle
            .budget_of(route)
            .is_some_and(|b| b.daily_usd.is_some())
}

impl<H: Host> Stream<H> {
    /// Runs the gate on an enforced decision. `None`: nothing to do here,
    /// conclude with `f` as it is; `Some`: the gate took the request over
    /// (paused it for a call, or answered it).
    pub(super) fn gate(
        &mut self,
        shared: &Rc<Shared>,
        route: &Routed,
        d: &Decision<'_>,
        f: &Final<'_>,
        cx: &Ctx<'_>,
    ) -> Option<super::Flow> {
        if d.mode != Mode::Enforce
            || !matches!(
                d.verdict,
                Verdict::Allow | Verdict::Sanitize | Verdict::ApprovalNeeded
            )
        {
            return None;
        }
        if let Some(flow) = self.rate(shared, route, f, cx) {
            return Some(flow);
        }
        if d.verdict != Verdict::ApprovalNeeded {
            // The common request: nothing to pay, nothing kept.
            if !metered(shared, route, d.cost_usd) {
                return None;
            }
            let held = Held::new(route, cx, d.write, Kept::of(f, d.cost_usd));
            return self.pay(shared, held, cx.t0).ok();
        }
        let cp = shared.control.as_ref()?;
        let mut held = Held::new(route, cx, d.write, Kept::of(f, d.cost_usd));
        let refuse =
            |s: &mut Self, reason: Reason<'_>| Some(s.refuse(shared, route, f, cx, reason, None));
        let retry: Vec<&str> = find(cx.headers, APPROVAL_HEADER).collect();
        let id = match retry.as_slice() {
            [] => None,
            [id] if callout::is_approval_id(id.trim()) => Some(id.trim()),
            [id] => {
                let reason = Reason::ApprovalRefused {
                    id,
                    why: "it is not an approval id",
                };
                return refuse(self, reason);
            }
            _ => {
                let reason = Reason::ApprovalRefused {
                    id: "",
                    why: "the call has more than one `x-aegis-approval` header",
                };
                return refuse(self, reason);
            }
        };
        let Some(action) = d.action else {
            return refuse(self, Reason::Internal("approval without an action"));
        };
        let host = self.tool_host(shared, cx.headers);
        let first = |name: &str| find(cx.headers, name).next().unwrap_or_default();
        let req = Request {
            method: first(":method"),
            authority: &host,
            path: first(":path"),
            headers: cx.headers,
            body: Some(cx.body),
        };
        let digest = match shared.bundle.approval_digest(route, action, &req) {
            Ok(d) => to_hex(&d).as_str().to_owned(),
            Err(e) => {
                self.host.log(
                    Level::Error,
                    &format!("aegis: cannot compute the approval digest: {e}"),
                );
                return refuse(self, Reason::Internal("approval digest"));
            }
        };
        held.approval.digest = digest;
        if cp.approval_hold_ms > 0 {
            held.approval.hold_until = cx
                .t0
                .saturating_add(u64::from(cp.approval_hold_ms).saturating_mul(1_000_000));
        }
        // What the person deciding sees of the call, DLP applied; the
        // reading is the digest's, so it fails only where the digest did.
        let shown = shared
            .bundle
            .approval_summary(route, action, &req)
            .map_err(|e| {
                self.host.log(
                    Level::Warn,
                    &format!("aegis: the approval shows no parameters: {e}"),
                );
            })
            .ok();
        let params = shown
            .as_ref()
            .and_then(|s| serde_json::value::RawValue::from_string(s.params.clone()).ok());
        let agent = shared.bundle.agent_of(route);
        let new = NewApproval {
            tenant: agent.map_or("default", |(t, _)| t.unwrap_or("default")),
            agent: agent.map_or("", |(_, n)| n),
            tool: f.tool.unwrap_or_default(),
            action,
            rule: f.rule.unwrap_or_default(),
            reason: &f.reason,
            policy_version: shared.bundle.policy_version(),
            digest: &held.approval.digest,
            summary: Summary {
                method: req.method,
                host: &host,
                // Without its parameters when they could not be masked.
                path: shown.as_ref().map_or_else(
                    || req.path.split('?').next().unwrap_or_default(),
                    |s| s.path.as_str(),
                ),
                request_id: cx.request_id,
                body_bytes: cx.body.len(),
                params,
                params_truncated: shown.as_ref().is_some_and(|s| s.truncated),
            },
        };
        let create = callout::create_approval(&new);
        let call = match id {
            Some(id) => {
                held.approval.id = id.to_owned();
                held.step = Step::Redeem;
                held.create = Some(create);
                callout::redeem(id, &held.approval.digest)
            }
            None => create,
        };
        Some(self.send(shared, cp, call, u64::from(cp.timeout_ms), held, cx.t0))
    }

    /// The rate stage: an agent with `budget.rps` takes a token from its
    /// bucket in the proxy's shared data; none left answers 429 with
    /// `retry-after`. No call leaves the proxy.
    fn rate(
        &mut self,
        shared: &Rc<Shared>,
        route: &Routed,
        f: &Final<'_>,
        cx: &Ctx<'_>,
    ) -> Option<super::Flow> {
        if !shared.rate_limits {
            return None;
        }
        let rps = shared.bundle.budget_of(route)?.rps?;
        let (tenant, name) = shared.bundle.agent_of(route)?;
        let key = rate::key(&AgentRef::new(tenant, name));
        let Take::Limited {
            retry_after_secs,
            why,
        } = rate::take(&self.host, &key, rps, cx.t0)
        else {
            return None;
        };
        let reason = match why {
            Why::Rate => Reason::RateLimited { rps },
            Why::Unchecked => Reason::RateUnchecked,
        };
        Some(self.refuse(shared, route, f, cx, reason, Some(retry_after_secs)))
    }

    /// Refuses, before any call out, a request the policy decided `f`
    /// about: the policy's action and rule, the gate's reason.
    fn refuse(
        &mut self,
        shared: &Rc<Shared>,
        route: &Routed,
        f: &Final<'_>,
        cx: &Ctx<'_>,
        reason: Reason<'_>,
        retry_after: Option<u64>,
    ) -> super::Flow {
        let d = shared.bundle.refusal(route, reason);
        let mut out = Final::from_decision(&d, cx.request_id, f.rpc_id);
        out.action = f.action.or(out.action);
        out.rule = f.rule.or(out.rule);
        out.retry_after = retry_after;
        self.conclude(Some(shared), &out, cx.phase, cx.t0)
    }

    /// The tool host the request is for: the route's (base-URL mode) or
    /// the request's authority.
    fn tool_host(&self, shared: &Shared, headers: &[(String, String)]) -> String {
        if shared.tool_host_from_route {
            if let Some(h) = self.host.route_tool_host() {
                return h;
            }
        }
        find(headers, ":authority")
            .find(|a| !a.is_empty())
            .or_else(|| find(headers, "host").next())
            .unwrap_or_default()
            .to_owned()
    }

    /// Makes a call and pauses the request for its answer; a call that
    /// cannot even start is a failed call.
    fn send(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        call: Call,
        timeout_ms: u64,
        mut held: Held,
        t0: u64,
    ) -> super::Flow {
        match callout::dispatch(&self.host, cp, &call, timeout_ms) {
            Ok(token) => {
                held.token = token;
                self.state = State::Calling(Box::new(held));
                super::Flow::Pause
            }
            Err(e) => {
                self.host.log(
                    Level::Error,
                    &format!(
                        "aegis: cannot call the control plane (cluster `{}`): {e}",
                        cp.cluster
                    ),
                );
                self.failed(shared, cp, held, &Failure::NoAnswer, t0)
            }
        }
    }

    /// The answer to the call a held request waits for, or to a give-back.
    pub fn on_call_response(&mut self, token: u32, body_size: usize) {
        if let Some(i) = self.give_backs.iter().position(|(t, _)| *t == token) {
            let (_, settle) = self.give_backs.swap_remove(i);
            budget::settle_answered(&self.host, &settle, body_size);
            return;
        }
        let State::Calling(held) = &self.state else {
            return;
        };
        if held.token != token {
            return;
        }
        let (Some(shared), State::Calling(held)) = (
            self.shared.clone(),
            std::mem::replace(&mut self.state, State::Forward),
        ) else {
            return;
        };
        let t0 = self.host.now_nanos();
        let Some(cp) = shared.control.as_ref() else {
            // Cannot be (a call was made): answer rather than leave the
            // request paused.
            self.finish(
                &shared,
                &held,
                Reason::Internal("no control plane"),
                None,
                t0,
            );
            return;
        };
        let headers = self.host.call_response_headers();
        let body = self.host.call_response_body(body_size);
        let flow = match callout::response(&headers, &body) {
            Err(e) => self.failed(&shared, cp, *held, &e, t0),
            Ok(r) => self.answered(&shared, cp, *held, &r, t0),
        };
        if flow == super::Flow::Continue {
            if let Err(e) = self.host.resume_request() {
                self.host.log(
                    Level::Error,
                    &format!("aegis: cannot resume the request: {e}"),
                );
            }
        }
    }

    fn answered(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        mut held: Held,
        r: &callout::Response<'_>,
        t0: u64,
    ) -> super::Flow {
        match held.step {
            Step::Create => match callout::created(r) {
                Err(e) => self.failed(shared, cp, held, &e, t0),
                Ok(c) => {
                    held.approval.id = c.approval_id;
                    held.approval.url = c.url;
                    held.approval.expires_at = c.expires_at;
                    match c.status.as_str() {
                        "approved" => self.redeem(shared, cp, held, t0),
                        _ => self.wait_or_answer(shared, cp, held, t0),
                    }
                }
            },
            Step::Poll => match callout::status(r) {
                Err(e) => self.failed(shared, cp, held, &e, t0),
                Ok(Status::Pending) => self.wait_or_answer(shared, cp, held, t0),
                Ok(Status::Approved { .. }) => self.redeem(shared, cp, held, t0),
                Ok(Status::Denied { by, comment }) => self.denied(shared, &held, &by, &comment, t0),
                Ok(Status::Gone(why)) => self.unusable(shared, &held, why, t0),
            },
            Step::Lease => self.leased(shared, cp, held, r, t0),
            Step::Redeem => match callout::redeemed(r) {
                Err(e) => self.failed(shared, cp, held, &e, t0),
                Ok(Redeemed::Approved { by }) => self.approved(shared, held, by, t0),
                Ok(Redeemed::Pending) => self.ask_again(shared, cp, held, t0),
                Ok(Redeemed::Denied { by, comment }) => {
                    self.denied(shared, &held, &by, &comment, t0)
                }
                Ok(Redeemed::Refused(why)) => self.unusable(shared, &held, why, t0),
            },
        }
    }

    /// A person said no: deny, with who and why.
    fn denied(
        &mut self,
        shared: &Rc<Shared>,
        held: &Held,
        by: &str,
        comment: &str,
        t0: u64,
    ) -> super::Flow {
        let reason = Reason::ApprovalDenied {
            id: &held.approval.id,
            by,
            comment,
        };
        self.finish(shared, held, reason, Some(by), t0)
    }

    /// The approval cannot serve this call (`why`: used, another call,
    /// expired, unknown).
    fn unusable(
        &mut self,
        shared: &Rc<Shared>,
        held: &Held,
        why: &'static str,
        t0: u64,
    ) -> super::Flow {
        let reason = Reason::ApprovalRefused {
            id: &held.approval.id,
            why,
        };
        self.finish(shared, held, reason, None, t0)
    }

    /// A pending approval: long-poll it while the hold lasts, else tell the
    /// agent how to retry.
    fn wait_or_answer(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        mut held: Held,
        t0: u64,
    ) -> super::Flow {
        let left_ns = held.approval.hold_until.saturating_sub(t0);
        if left_ns < 1_000_000_000 {
            return self.pending(shared, &held, t0);
        }
        let wait_s = (left_ns / 1_000_000_000).min(MAX_WAIT_S);
        held.step = Step::Poll;
        let call = callout::approval_status(&held.approval.id, wait_s);
        let timeout = wait_s
            .saturating_mul(1_000)
            .saturating_add(u64::from(cp.timeout_ms));
        self.send(shared, cp, call, timeout, held, t0)
    }

    /// A retry whose approval is not decided yet: asks for this call's
    /// approval again, which answers with the pending one and goes on as
    /// for the first call (held, or answered with the approval).
    fn ask_again(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        mut held: Held,
        t0: u64,
    ) -> super::Flow {
        match held.create.take() {
            Some(call) => {
                held.step = Step::Create;
                self.send(shared, cp, call, u64::from(cp.timeout_ms), held, t0)
            }
            None => self.pending(shared, &held, t0),
        }
    }

    fn redeem(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        mut held: Held,
        t0: u64,
    ) -> super::Flow {
        held.step = Step::Redeem;
        let call = callout::redeem(&held.approval.id, &held.approval.digest);
        self.send(shared, cp, call, u64::from(cp.timeout_ms), held, t0)
    }

    /// Answers `approval_needed` with the approval the agent waits for.
    fn pending(&mut self, shared: &Rc<Shared>, held: &Held, t0: u64) -> super::Flow {
        self.count_approval(shared, held, "pending");
        let rule = held.kept.rule.clone().unwrap_or_default();
        let reason = Reason::ApprovalPending {
            rule: &rule,
            id: &held.approval.id,
        };
        let d = shared.bundle.refusal(&held.route, reason);
        let mut f = self.final_of(&d, held);
        let approval = ApprovalRef {
            id: &held.approval.id,
            url: &held.approval.url,
            expires_at: held.approval.expires_at,
        };
        f.approval = (!held.approval.url.is_empty()).then_some(approval);
        self.conclude(Some(shared), &f, held.phase, t0)
    }

    /// Concludes a held request with `reason`; `approver`: who decided.
    fn finish(
        &mut self,
        shared: &Rc<Shared>,
        held: &Held,
        reason: Reason<'_>,
        approver: Option<&str>,
        t0: u64,
    ) -> super::Flow {
        let outcome = match reason {
            Reason::Approved { .. } => "approved",
            Reason::ApprovalDenied { .. } => "denied",
            Reason::FailedOpen { .. } => "failed_open",
            Reason::ControlPlaneUnavailable { .. } => "failed_closed",
            _ => "refused",
        };
        self.count_approval(shared, held, outcome);
        let d = shared.bundle.refusal(&held.route, reason);
        let mut f = self.final_of(&d, held);
        f.approver = approver;
        self.conclude(Some(shared), &f, held.phase, t0)
    }

    /// The final outcome for a decision about a held request: the policy's
    /// names (an MCP action is found by the body stages, not the route).
    fn final_of<'a>(&self, d: &Decision<'a>, held: &'a Held) -> Final<'a> {
        let mut f = Final::from_decision(d, &held.request_id, held.kept.rpc_id.as_deref());
        f.action = held.kept.action.as_deref().or(f.action);
        f.rule = held.kept.rule.as_deref().or(f.rule);
        f.approval_id = Some(held.approval.id.as_str()).filter(|id| !id.is_empty());
        f
    }

    /// Counts what became of an approval, by agent.
    fn count_approval(&self, shared: &Shared, held: &Held, outcome: &str) {
        let agent = shared
            .bundle
            .agent_of(&held.route)
            .map_or(NONE, |(_, name)| name);
        if let Ok(mut m) = shared.metrics.try_borrow_mut() {
            m.count(
                &self.host,
                metrics::APPROVAL_TOTAL,
                &[("agent", agent), ("outcome", outcome)],
            );
        }
    }

    /// The fail policy: a write is refused, a read goes on (each as
    /// configured), and the failure is logged.
    fn failed(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        held: Held,
        e: &Failure,
        t0: u64,
    ) -> super::Flow {
        let policy = if held.write {
            cp.on_failure.writes
        } else {
            cp.on_failure.reads
        };
        let why = e.to_string();
        let what = if held.step == Step::Lease {
            "budget"
        } else {
            "approval"
        };
        self.host.log(
            Level::Warn,
            &format!(
                "aegis: the control plane failed the {what} check of request `{}`: {why}; {}",
                held.request_id,
                match policy {
                    OnFailure::Deny => "refused",
                    OnFailure::Allow => "let through unchecked",
                }
            ),
        );
        if what == "budget" {
            let reason = match policy {
                OnFailure::Deny => Reason::ControlPlaneUnavailable { what, why: &why },
                OnFailure::Allow => Reason::FailedOpen { what, why: &why },
            };
            let d = shared.bundle.refusal(&held.route, reason);
            let mut f = self.final_of(&d, &held);
            f.approver = held.approver.as_deref();
            f.budget = (policy == OnFailure::Allow).then_some("unmetered");
            return self.conclude(Some(shared), &f, held.phase, t0);
        }
        let reason = match policy {
            OnFailure::Deny => Reason::ControlPlaneUnavailable { what, why: &why },
            OnFailure::Allow => Reason::FailedOpen { what, why: &why },
        };
        self.finish(shared, &held, reason, None, t0)
    }

    /// An approved call: on to the budget, then upstream.
    fn approved(
        &mut self,
        shared: &Rc<Shared>,
        mut held: Held,
        by: String,
        t0: u64,
    ) -> super::Flow {
        self.count_approval(shared, &held, "approved");
        let rule = held.kept.rule.clone().unwrap_or_default();
        let reason = Reason::Approved {
            rule: &rule,
            id: &held.approval.id,
            by: &by,
        };
        held.kept.verdict = reason.verdict();
        held.kept.reason = reason.to_string();
        held.kept.status = reason.status().into();
        held.approver = Some(by);
        match self.pay(shared, held, t0) {
            Ok(flow) => flow,
            Err(held) => self.pass(shared, &held, None, t0),
        }
    }

    /// The budget stage: a call of a rule with `cost_usd`, by an agent
    /// with `budget.daily_usd`, spends its cost from the proxy's lease, and
    /// waits for a new lease only when that one cannot cover it. `Err`
    /// gives the request back when there is nothing to pay (no control
    /// plane, no budget, no cost).
    fn pay(
        &mut self,
        shared: &Rc<Shared>,
        mut held: Held,
        t0: u64,
    ) -> Result<super::Flow, Box<Held>> {
        let Some(cp) = shared.control.as_ref() else {
            return Err(Box::new(held));
        };
        let daily_usd = shared
            .bundle
            .budget_of(&held.route)
            .and_then(|b| b.daily_usd);
        let cost = held
            .kept
            .cost_usd
            .and_then(budget::micros)
            .filter(|c| *c > 0);
        let agent = shared.bundle.agent_of(&held.route);
        let (Some(daily_usd), Some(cost), Some((tenant, name))) = (daily_usd, cost, agent) else {
            return Err(Box::new(held));
        };
        let agent = AgentRef::new(tenant, name);
        Ok(
            match budget::spend(&self.host, &agent, cost, cp.lease_calls, t0) {
                Spend::Spent => {
                    self.gauge(shared, &held, &agent, t0);
                    self.pass(shared, &held, Some("spent"), t0)
                }
                Spend::NeedLease(need) => {
                    let call = callout::lease(need.body(&agent));
                    held.step = Step::Lease;
                    held.lease = Some(LeaseAsk {
                        agent,
                        need,
                        cost,
                        daily_usd,
                    });
                    self.send(shared, cp, call, u64::from(cp.timeout_ms), held, t0)
                }
                Spend::Exhausted { retry_after_secs } => {
                    self.exhausted(shared, &held, daily_usd, retry_after_secs, t0)
                }
                Spend::Unavailable => {
                    held.step = Step::Lease;
                    let e = Failure::Unexpected("the proxy's shared data failed".into());
                    self.failed(shared, cp, held, &e, t0)
                }
            },
        )
    }

    /// The answer to a lease: installed and spent from, or the day's
    /// budget is spent (429 until midnight UTC).
    fn leased(
        &mut self,
        shared: &Rc<Shared>,
        cp: &ControlPlane,
        mut held: Held,
        r: &callout::Response<'_>,
        t0: u64,
    ) -> super::Flow {
        let Some(ask) = held.lease.take() else {
            let e = Failure::Unexpected("no lease was asked for".into());
            return self.failed(shared, cp, held, &e, t0);
        };
        if r.status != 200 {
            let code = callout::error_code(r.body).unwrap_or_default();
            let e = Failure::Unexpected(format!("status {} {code} to the lease", r.status));
            return self.failed(shared, cp, held, &e, t0);
        }
        let grant = match Grant::parse(r.body) {
            Ok(g) => g,
            Err(e) => return self.failed(shared, cp, held, &Failure::Unexpected(e), t0),
        };
        let installed = budget::install(&self.host, &ask.agent, &ask.need, &grant, ask.cost, t0);
        if let (false, Some(id)) = (
            matches!(installed, Install::Unrecorded { .. }),
            grant.lease_id.as_deref(),
        ) {
            self.give_back(cp, &ask.agent, id);
        }
        match installed {
            Install::Spent => {
                self.gauge(shared, &held, &ask.agent, t0);
                self.pass(shared, &held, Some("spent"), t0)
            }
            Install::Exhausted { retry_after_secs } => {
                self.gauge(shared, &held, &ask.agent, t0);
                self.exhausted(shared, &held, ask.daily_usd, retry_after_secs, t0)
            }
            Install::Unrecorded { give_back } => {
                // The grant could not be kept: give it back now (its answer
                // is not waited for; the lease expires at the control plane
                // if this fails too).
                if let Some(settle) = give_back {
                    let call = callout::settle(settle.body());
                    let _ = callout::dispatch(&self.host, cp, &call, u64::from(cp.timeout_ms));
                }
                let e = Failure::Unexpected("the proxy's shared data failed".into());
                held.lease = Some(ask);
                self.failed(shared, cp, held, &e, t0)
            }
        }
    }

    /// The day's budget is spent: 429 until midnight UTC.
    fn exhausted(
        &mut self,
        shared: &Rc<Shared>,
        held: &Held,
        daily_usd: f64,
        retry_after_secs: u64,
        t0: u64,
    ) -> super::Flow {
        let reason = Reason::BudgetExhausted {
            limit_usd: daily_usd,
        };
        let d = shared.bundle.refusal(&held.route, reason);
        let mut f = self.final_of(&d, held);
        f.retry_after = Some(retry_after_secs);
        f.budget = Some("exhausted");
        f.approver = held.approver.as_deref();
        self.conclude(Some(shared), &f, held.phase, t0)
    }

    /// Gives back at once the grant `lease_id` when the install queued it
    /// to go back whole (the tick retries it if this answer does not come).
    fn give_back(&mut self, cp: &ControlPlane, agent: &AgentRef, lease_id: &str) {
        let queued = budget::give_backs(&self.host, agent);
        if let Some(settle) = queued.into_iter().find(|s| s.lease_id == lease_id) {
            let call = callout::settle(settle.body());
            if let Ok(token) = callout::dispatch(&self.host, cp, &call, u64::from(cp.timeout_ms)) {
                self.give_backs.push((token, settle));
            }
        }
    }

    /// Lets a held request go on with the outcome it kept.
    fn pass(
        &mut self,
        shared: &Rc<Shared>,
        held: &Held,
        budget: Option<&'static str>,
        t0: u64,
    ) -> super::Flow {
        let mut f = held.kept.as_final(&held.request_id);
        f.approval_id = Some(held.approval.id.as_str()).filter(|id| !id.is_empty());
        f.approver = held.approver.as_deref();
        f.budget = budget;
        self.conclude(Some(shared), &f, held.phase, t0)
    }

    /// `aegis_budget_remaining{agent}`: the day's budget left as this
    /// proxy knows it (the lease's rest when it knows no more).
    fn gauge(&self, shared: &Shared, held: &Held, agent: &AgentRef, now: u64) {
        let r = budget::remaining(&self.host, agent, now);
        let label = held.kept.agent.as_deref().unwrap_or(NONE);
        if let Ok(mut m) = shared.metrics.try_borrow_mut() {
            m.set(
                &self.host,
                metrics::BUDGET_REMAINING,
                &[("agent", label)],
                r.day.unwrap_or(r.lease),
            );
        }
    }
}
