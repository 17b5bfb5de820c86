//! The dashboard's pages. Each reads what the JSON API reads, through the
//! same functions, as the session's [`Caller`](crate::auth::Caller), and
//! renders it with [`esc`] on every value that came from outside.

use super::html::{bar, duration, esc, iso, money, time, url, Section};
use super::{check_form, error_page, field, form, html_page, Session};
use crate::api;
use crate::call;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;

/// Query parameters of the pages; unknown ones are ignored, numbers are
/// read leniently (a bad one is no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    next: Option<String>,
    done: Option<String>,
    a: Option<String>,
    b: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    search: Option<String>,
    before: Option<String>,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

fn nonempty(v: Option<&String>) -> Option<String> {
    v.map(|x| x.trim().to_owned()).filter(|x| !x.is_empty())
}

pub async fn login_form(Query(q): Query<PageQuery>) -> Response {
    login_page(StatusCode::OK, q.next.as_deref().unwrap_or(""), "")
}

/// The sign-in page, with `error` said above the form.
pub fn login_page(status: StatusCode, next: &str, error: &str) -> Response {
    let mut b = String::from("<h1>Sign in</h1>");
    if !error.is_empty() {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(error));
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/dashboard/login\" class=\"card\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label for=\"token\">Dashboard token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required>\
         <p class=\"meta\">A service token for you: <code>aegis admin token --role approver --tenant TENANT --subject NAME</code> \
         (or <code>--role viewer</code>). The token stays on this service; your browser keeps only a session cookie.</p>\
         <button type=\"submit\">Sign in</button></form>",
        esc(next)
    );
    html_page(status, "Sign in", Section::None, None, &b)
}

fn status_span(status: &str) -> String {
    format!(
        "<span class=\"status status-{}\">{}</span>",
        esc(status),
        esc(status)
    )
}

/// One approval: what was asked, the call's summary, and (pending, for an
/// approver) the decision form.
fn approval_card(a: &Value, session: &Session, heading: &str) -> String {
    let id = s(a, "approval_id");
    let mut c = String::from("<article class=\"card\">");
    let _ = write!(
        c,
        "<{heading}><a href=\"/dashboard/approvals/{}\">{} {}</a> by {}</{heading}>",
        url(id),
        esc(s(a, "tool")),
        esc(s(a, "action")),
        esc(s(a, "agent")),
    );
    let _ = write!(
        c,
        "<p>{} · tenant {} · <span class=\"meta\">{}</span></p><p>Why: {}</p>",
        status_span(s(a, "status")),
        esc(s(a, "tenant")),
        esc(id),
        esc(s(a, "reason"))
    );
    let _ = write!(
        c,
        "<p class=\"meta\">Rule {} · policy {} · asked {}</p>",
        esc(s(a, "rule")),
        esc(s(a, "policy_version")),
        i(a, "created_at").map(time).unwrap_or_default()
    );
    if let Some(summary) = a.get("summary").filter(|v| !v.is_null()) {
        match call::view(summary) {
            Some(v) => {
                let _ = write!(
                    c,
                    "<p>Call <code class=\"call\">{}</code></p><pre aria-label=\"parameters\">{}</pre>",
                    esc(&v.line),
                    esc(&v.params_text())
                );
                let mut small = v.meta.clone();
                if v.truncated {
                    if !small.is_empty() {
                        small.push_str(" · ");
                    }
                    small.push_str(
                        "the gateway left parameters out or cut them to keep the summary small",
                    );
                }
                if !small.is_empty() {
                    let _ = write!(c, "<p class=\"meta\">{}</p>", esc(&small));
                }
            }
            None => {
                let text = call::raw(Some(summary));
                let _ = write!(c, "<p>Call</p><pre>{}</pre>", esc(&text));
            }
        }
    }
    if s(a, "status") == "pending" {
        let expires = i(a, "expires_at").unwrap_or(0);
        let left = i(a, "expires_in_secs").unwrap_or(0);
        let _ = write!(
            c,
            "<p>Expires in <time data-expires=\"{expires}\" datetime=\"{}\">{}</time></p>",
            esc(&iso(expires)),
            esc(&duration(left))
        );
        if session.can_decide() {
            let _ = write!(
                c,
                "<form method=\"post\" action=\"/dashboard/approvals/{}/decision\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <label for=\"comment-{}\">Comment</label>\
                 <textarea id=\"comment-{}\" name=\"comment\" maxlength=\"2000\"></textarea>\
                 <div><button type=\"submit\" name=\"decision\" value=\"approve\" class=\"approve\">Approve</button>\
                 <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"deny\">Deny</button></div></form>",
                url(id),
                esc(&session.csrf),
                esc(id),
                esc(id)
            );
        } else {
            c.push_str("<p class=\"meta\">Viewers see approvals; approvers decide them.</p>");
        }
    } else if let Some(by) = a.get("decided_by").and_then(Value::as_str) {
        let _ = write!(
            c,
            "<p>Decided by {} {} after {}{}</p>",
            esc(by),
            i(a, "decided_at").map(time).unwrap_or_default(),
            i(a, "time_to_decision_secs")
                .map(duration)
                .unwrap_or_default(),
            a.get("comment")
                .and_then(Value::as_str)
                .map(|t| format!(": “{}”", esc(t)))
                .unwrap_or_default()
        );
    }
    c.push_str("</article>");
    c
}

pub async fn approvals(
    State(st): State<AppState>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Response {
    let pending_q = api::approvals::ListQuery {
        status: Some("pending".into()),
        tenant: None,
        limit: Some(200),
    };
    let all_q = api::approvals::ListQuery {
        status: None,
        tenant: None,
        limit: Some(100),
    };
    let (pending, all) = match (
        api::approvals::list_for(&st, &session.caller, &pending_q).await,
        api::approvals::list_for(&st, &session.caller, &all_q).await,
    ) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => return error_page(Some(&session), &e),
    };
    let mut b = String::from("<h1>Approvals</h1>");
    flash(&mut b, q.done.as_deref());
    let _ = write!(b, "<h2 id=\"pending\">Pending ({})</h2>", pending.len());
    if pending.is_empty() {
        b.push_str("<p>No approval is waiting.</p>");
    }
    for a in &pending {
        b.push_str(&approval_card(a, &session, "h3"));
    }
    b.push_str("<h2 id=\"history\">History</h2>");
    let decided: Vec<&Value> = all.iter().filter(|a| s(a, "status") != "pending").collect();
    if decided.is_empty() {
        b.push_str("<p>No decided approvals yet.</p>");
    } else {
        b.push_str(
            "<div class=\"table-wrap\"><table><thead><tr><th>Approval</th><th>Agent</th><th>Call</th><th>Status</th>\
             <th>Decided by</th><th>Comment</th><th>Time to decision</th></tr></thead><tbody>",
        );
        for a in decided {
            let _ = write!(
                b,
                "<tr><td><a href=\"/dashboard/approvals/{}\">{}</a></td><td>{}/{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                url(s(a, "approval_id")),
                esc(s(a, "approval_id")),
                esc(s(a, "tenant")),
                esc(s(a, "agent")),
                esc(s(a, "tool")),
                esc(s(a, "action")),
                status_span(s(a, "status")),
                esc(s(a, "decided_by")),
                esc(s(a, "comment")),
                i(a, "time_to_decision_secs").map(duration).unwrap_or_else(|| "—".into()),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    html_page(
        StatusCode::OK,
        "Approvals",
        Section::Approvals,
        Some(&session),
        &b,
    )
}

fn flash(b: &mut String, done: Option<&str>) {
    let text = match done {
        Some("approved") => "Approved: the held call goes on.",
        Some("denied") => "Denied: the agent is told why.",
        _ => return,
    };
    let _ = write!(b, "<p class=\"flash\" role=\"status\">{text}</p>");
}

pub async fn approval(
    State(st): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let a = match api::approvals::one(&st, &session.caller, &id).await {
        Ok(a) => a,
        Err(e) => return error_page(Some(&session), &e),
    };
    let mut b = format!("<h1>Approval {}</h1>", esc(&id));
    flash(&mut b, q.done.as_deref());
    b.push_str(&approval_card(&a, &session, "h2"));
    b.push_str("<p><a href=\"/dashboard/approvals\">All approvals</a></p>");
    html_page(
        StatusCode::OK,
        "Approval",
        Section::Approvals,
        Some(&session),
        &b,
    )
}

pub async fn decide(
    State(st): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let fields = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_page(Some(&session), &e),
    };
    if let Err(e) = check_form(&st, &headers, Some(&session.csrf), field(&fields, "csrf")) {
        return error_page(Some(&session), &e);
    }
    let approve = match field(&fields, "decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return error_page(
                Some(&session),
                &ApiError::bad_request("invalid_decision", "choose approve or deny"),
            )
        }
    };
    let comment = field(&fields, "comment")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let r = api::approvals::DecisionRequest {
        approve,
        comment,
        via: Some("dashboard".into()),
    };
    match api::approvals::decide_as(&st, &session.caller, &id, &r).await {
        Ok(_) => Redirect::to(&format!(
            "/dashboard/approvals/{}?done={}",
            url(&id),
            if approve { "approved" } else { "denied" }
        ))
        .into_response(),
        Err(e) => error_page(Some(&session), &e),
    }
}

pub async fn agents(State(st): State<AppState>, session: Session) -> Response {
    let v = match api::agents::overview(&st, &session.caller).await {
        Ok(v) => v,
        Err(e) => return error_page(Some(&session), &e),
    };
    let list = v
        .get("agents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let records = i(&v, "decision_records").unwrap_or(0);
    let mut b = format!(
        "<h1>Agents</h1><p class=\"meta\">Today ({} UTC)",
        esc(s(&v, "day"))
    );
    if let Some(r) = i(&v, "policy_revision") {
        let _ = write!(b, ", limits from policy revision {r}");
    }
    b.push_str("</p>");
    if list.is_empty() {
        b.push_str(
            "<p>No agent has a credential, a budget day, an approval or a decision record yet.</p>",
        );
    }
    b.push_str("<div class=\"grid\">");
    for a in &list {
        let spent = f(a, "spent_usd").unwrap_or(0.0);
        let _ = write!(
            b,
            "<article class=\"card\"><h2>{}</h2><p class=\"meta\">tenant {}</p>",
            esc(s(a, "agent")),
            esc(s(a, "tenant"))
        );
        match f(a, "limit_usd") {
            Some(limit) => {
                let label = format!("{} of {} spent", money(spent), money(limit));
                let _ = write!(
                    b,
                    "<p>Spend today: {} of {} ({} reserved)</p>{}",
                    money(spent),
                    money(limit),
                    money(f(a, "reserved_usd").unwrap_or(0.0)),
                    bar(spent + f(a, "reserved_usd").unwrap_or(0.0), limit, &label)
                );
            }
            None => {
                let _ = write!(b, "<p>Spend today: {} (no daily budget)</p>", money(spent));
            }
        }
        let _ = write!(
            b,
            "<p>Open leases: {} · Rate limit: {} · Pending approvals: {}</p>",
            i(a, "open_leases").unwrap_or(0),
            f(a, "rps").map_or_else(|| "none".to_owned(), |r| format!("{r} req/s")),
            i(a, "pending_approvals").unwrap_or(0)
        );
        match a.get("verdicts").and_then(Value::as_object) {
            Some(m) if records > 0 => {
                b.push_str("<p>Verdicts today:</p><ul>");
                for (verdict, n) in m {
                    let _ = write!(b, "<li>{}: {}</li>", esc(verdict), n.as_i64().unwrap_or(0));
                }
                b.push_str("</ul>");
            }
            _ => b.push_str("<p class=\"meta\">Verdict mix: no decision records</p>"),
        }
        b.push_str("</article>");
    }
    b.push_str("</div>");
    html_page(
        StatusCode::OK,
        "Agents",
        Section::Agents,
        Some(&session),
        &b,
    )
}

pub async fn policy(
    State(st): State<AppState>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Response {
    let revs = match api::bundles::revisions(&st, &session.caller).await {
        Ok(r) => r,
        Err(e) => return error_page(Some(&session), &e),
    };
    let mut b = String::from("<h1>Policy</h1><h2>Revisions</h2>");
    if revs.is_empty() {
        b.push_str("<p>No bundle is published yet.</p>");
    } else {
        b.push_str(
            "<div class=\"table-wrap\"><table><thead><tr><th>Revision</th><th>Policy version</th><th>Published by</th>\
             <th>Published</th><th>Active on</th></tr></thead><tbody>",
        );
        for r in &revs {
            let active: Vec<String> = r
                .get("active_on")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|g| {
                    format!(
                        "{} <span class=\"meta\">(fetched {})</span>",
                        esc(s(g, "gateway")),
                        i(g, "fetched_at").map(time).unwrap_or_default()
                    )
                })
                .collect();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i(r, "revision").unwrap_or(0),
                esc(s(r, "policy_version")),
                esc(s(r, "published_by")),
                i(r, "published_at").map(time).unwrap_or_default(),
                if active.is_empty() {
                    "<span class=\"meta\">no gateway known</span>".to_owned()
                } else {
                    active.join("<br>")
                }
            );
        }
        b.push_str("</tbody></table></div>");
    }
    b.push_str("<h2>Compare revisions</h2>");
    if session.caller.tenant != "*" {
        b.push_str("<p class=\"meta\">A bundle holds every tenant's policies: comparing revisions needs a token for all tenants.</p>");
        return html_page(
            StatusCode::OK,
            "Policy",
            Section::Policy,
            Some(&session),
            &b,
        );
    }
    let numbers: Vec<i64> = revs.iter().filter_map(|r| i(r, "revision")).collect();
    let pick = |v: Option<&String>, default: Option<i64>| {
        v.and_then(|x| x.trim().parse::<i64>().ok()).or(default)
    };
    let new = pick(q.b.as_ref(), numbers.first().copied());
    let old = pick(q.a.as_ref(), numbers.get(1).copied().or(new));
    let select = |name: &str, label: &str, chosen: Option<i64>| {
        let mut h = format!("<div><label for=\"rev-{name}\">{label}</label><select id=\"rev-{name}\" name=\"{name}\">");
        for n in &numbers {
            let sel = if Some(*n) == chosen { " selected" } else { "" };
            let _ = write!(h, "<option value=\"{n}\"{sel}>{n}</option>");
        }
        h.push_str("</select></div>");
        h
    };
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/dashboard/policy\" class=\"filters\">{}{}<div><button type=\"submit\">Compare</button></div></form>",
        select("a", "Old revision", old),
        select("b", "New revision", new)
    );
    if let (Some(old), Some(new)) = (old, new) {
        let texts = (
            api::bundles::explain_text(&st, &session.caller, old).await,
            api::bundles::explain_text(&st, &session.caller, new).await,
        );
        match texts {
            (Ok(a), Ok(c)) => {
                let lines = super::diff::lines(&a, &c);
                let changed = lines.iter().filter(|(t, _)| *t != ' ').count();
                let _ = write!(
                    b,
                    "<p>Revision {old} to {new}: {}</p><pre class=\"diff\" aria-label=\"explain diff\">",
                    if changed == 0 {
                        "no difference in what the policy says".to_owned()
                    } else {
                        format!("{changed} lines changed")
                    }
                );
                for (tag, line) in lines {
                    let class = match tag {
                        '+' => " class=\"add\"",
                        '-' => " class=\"del\"",
                        _ => "",
                    };
                    let _ = write!(b, "<span{class}>{tag} {}</span>", esc(&line));
                }
                b.push_str("</pre>");
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = write!(
                    b,
                    "<p class=\"error\" role=\"alert\">{}</p>",
                    esc(&e.message)
                );
            }
        }
    }
    html_page(
        StatusCode::OK,
        "Policy",
        Section::Policy,
        Some(&session),
        &b,
    )
}

/// Events per audit page.
const AUDIT_PAGE: i64 = 50;

pub async fn audit(
    State(st): State<AppState>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Response {
    let report = match api::audit::chain_status(&st, &session.caller).await {
        Ok(r) => r,
        Err(e) => return error_page(Some(&session), &e),
    };
    let before = q
        .before
        .as_deref()
        .and_then(|b| b.trim().parse::<i64>().ok())
        .unwrap_or(i64::MAX);
    let query = api::audit::ListQuery {
        since: None,
        limit: Some(AUDIT_PAGE),
        format: None,
        kind: nonempty(q.kind.as_ref()),
        actor: nonempty(q.actor.as_ref()),
        subject: None,
        search: nonempty(q.search.as_ref()),
        before: Some(before),
    };
    let records =
        match crate::audit::search(&st.store, &query.filter(&session.caller, AUDIT_PAGE)).await {
            Ok(r) => r,
            Err(e) => return error_page(Some(&session), &e.into()),
        };
    let mut b = String::from("<h1>Audit</h1><section class=\"card\" aria-label=\"chain status\">");
    match &report.first_break {
        None => {
            let _ = write!(
                b,
                "<p><strong>Chain intact</strong>: verified up to record {} of {}; {}.</p>",
                report.verified_upto,
                report.records,
                report.last_checkpoint.map_or_else(
                    || "no signed checkpoint yet".to_owned(),
                    |c| format!("last signed checkpoint at record {c}")
                )
            );
        }
        Some(br) => {
            let _ = write!(
                b,
                "<p class=\"error\" role=\"alert\"><strong>Chain broken at record {}</strong>: {} (verified up to record {}).</p>",
                br.seq,
                esc(&br.message),
                report.verified_upto
            );
        }
    }
    b.push_str("</section>");
    let val = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/dashboard/audit\" class=\"filters\" role=\"search\">\
         <div><label for=\"kind\">Kind</label><input type=\"text\" id=\"kind\" name=\"kind\" value=\"{}\" placeholder=\"approval.decided\"></div>\
         <div><label for=\"actor\">Actor</label><input type=\"text\" id=\"actor\" name=\"actor\" value=\"{}\" placeholder=\"approver:alice\"></div>\
         <div><label for=\"search\">Text</label><input type=\"search\" id=\"search\" name=\"search\" value=\"{}\"></div>\
         <div><button type=\"submit\">Search</button></div></form>",
        val(&q.kind),
        val(&q.actor),
        val(&q.search)
    );
    if records.is_empty() {
        b.push_str("<p>No events match.</p>");
    } else {
        b.push_str(
            "<div class=\"table-wrap\"><table><thead><tr><th>#</th><th>Time</th><th>Tenant</th><th>Actor</th><th>Kind</th>\
             <th>Subject</th><th>Details</th></tr></thead><tbody>",
        );
        for r in &records {
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"nowrap\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"id\">{}</td><td><code>{}</code></td></tr>",
                r.seq,
                esc(&time(r.at_ms / 1000)),
                esc(&r.tenant),
                esc(&r.actor),
                esc(&r.kind),
                esc(&r.subject),
                esc(&r.data)
            );
        }
        b.push_str("</tbody></table></div>");
    }
    if let Some(last) = records
        .last()
        .filter(|_| records.len() as i64 >= AUDIT_PAGE)
    {
        let mut href = format!("/dashboard/audit?before={}", last.seq);
        for (k, v) in [
            ("kind", &q.kind),
            ("actor", &q.actor),
            ("search", &q.search),
        ] {
            if let Some(v) = nonempty(v.as_ref()) {
                let _ = write!(href, "&{k}={}", url(&v));
            }
        }
        let _ = write!(
            b,
            "<p><a href=\"{}\" rel=\"next\">Older events</a></p>",
            esc(&href)
        );
    }
    html_page(StatusCode::OK, "Audit", Section::Audit, Some(&session), &b)
}
