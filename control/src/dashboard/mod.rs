//! The web dashboard under `/dashboard/`: sign-in with a service token, a
//! server-side session behind an `HttpOnly`, `SameSite=Strict` cookie, a
//! synchronizer CSRF token on every form, and server-rendered pages
//! ([`pages`]) that read the same data functions as the JSON API.
//!
//! Roles and tenants are the API's: a page builds the session's
//! [`Caller`] and calls what the API calls, so a viewer cannot decide and a
//! tenant's people see their tenant only, whichever way they ask.

mod diff;
mod html;
mod pages;

pub use diff::unified as explain_diff;

use crate::audit::chain::NewEvent;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::now_ms;
use aegis_engine::trust::hex;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use html::{esc, Section};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// The session cookie's name.
pub const COOKIE: &str = "aegis_session";
/// Longest session, whatever the token's own expiry.
pub const MAX_SESSION_SECS: i64 = 12 * 3600;
/// Largest form accepted.
const FORM_LIMIT: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::to("/dashboard/approvals") }),
        )
        .route(
            "/dashboard/",
            get(|| async { Redirect::to("/dashboard/approvals") }),
        )
        .route("/dashboard/login", get(pages::login_form).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/approvals", get(pages::approvals))
        .route("/dashboard/approvals/{id}", get(pages::approval))
        .route("/dashboard/approvals/{id}/decision", post(pages::decide))
        .route("/dashboard/agents", get(pages::agents))
        .route("/dashboard/policy", get(pages::policy))
        .route("/dashboard/audit", get(pages::audit))
        .route("/dashboard/{*rest}", get(not_found))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::from_fn(headers))
}

async fn not_found(session: Session) -> Response {
    error_page(
        Some(&session),
        &ApiError::not_found("no such page on the dashboard"),
    )
}

/// Headers on every dashboard answer, redirects and errors included. Pages
/// set their own Content-Security-Policy (with the nonce of their one
/// script); anything else gets one that allows nothing.
async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it browsers send `Origin: null` on the
    // dashboard's own forms, which the Origin check refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// A page answer: HTML with a fresh nonce in its Content-Security-Policy.
pub(crate) fn html_page(
    status: StatusCode,
    title: &str,
    section: Section,
    session: Option<&Session>,
    body: &str,
) -> Response {
    let nonce = random_hex(16);
    let who = session.map(|s| html::Who {
        subject: &s.caller.subject,
        role: s.caller.role.as_str(),
        tenant: &s.caller.tenant,
        csrf: &s.csrf,
    });
    let text = html::page(title, section, who.as_ref(), &nonce, body);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut res = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        text,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

/// An error as a page (within a session) or as the sign-in page.
pub(crate) fn error_page(session: Option<&Session>, e: &ApiError) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/dashboard/approvals\">Back to approvals</a></p>",
        esc(e.status.canonical_reason().unwrap_or("Error")),
        esc(&e.message)
    );
    html_page(e.status, "Error", Section::None, session, &body)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex(&b)
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Equal in time that does not depend on where the inputs differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in person: who (as the API's [`Caller`]) and the session's
/// CSRF token.
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    id_sha256: String,
}

impl Session {
    /// Whether this person may decide approvals (the buttons are shown).
    pub fn can_decide(&self) -> bool {
        self.caller.require(&[Role::Approver]).is_ok()
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// A page without a valid session: GETs go to the sign-in page (and come
/// back), anything else is refused.
pub struct NoSession(Response);

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        self.0
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let refuse = |parts: &axum::http::request::Parts| {
            if parts.method == axum::http::Method::GET {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/dashboard/approvals", |p| p.as_str());
                NoSession(
                    Redirect::to(&format!("/dashboard/login?next={}", html::url(next)))
                        .into_response(),
                )
            } else {
                NoSession(error_page(
                    None,
                    &ApiError::forbidden("no_session", "sign in first"),
                ))
            }
        };
        let Some(id) = cookie_value(&parts.headers) else {
            return Err(refuse(parts));
        };
        let id_sha256 = sha256_hex(&id);
        let row = sqlx::query(
            "SELECT role, tenant, subject, csrf FROM dashboard_sessions WHERE id_sha256 = $1 AND expires_ms > $2",
        )
        .bind(&id_sha256)
        .bind(now_ms())
        .fetch_optional(s.store.pool())
        .await;
        let row = match row {
            Ok(Some(r)) => r,
            Ok(None) => return Err(refuse(parts)),
            Err(e) => return Err(NoSession(error_page(None, &e.into()))),
        };
        let read = || -> Result<Session, sqlx::Error> {
            let role: String = row.try_get("role")?;
            Ok(Session {
                caller: Caller {
                    // Stored from a verified token; an unknown role signs no one in.
                    role: Role::parse(&role).unwrap_or(Role::Gateway),
                    tenant: row.try_get("tenant")?,
                    subject: row.try_get("subject")?,
                },
                csrf: row.try_get("csrf")?,
                id_sha256: id_sha256.clone(),
            })
        };
        match read() {
            Ok(session) if session.caller.role != Role::Gateway => Ok(session),
            Ok(_) => Err(refuse(parts)),
            Err(e) => Err(NoSession(error_page(None, &e.into()))),
        }
    }
}

/// Refuses a form unless it carries the session's CSRF token and, when the
/// browser says where it comes from, comes from this service.
pub(crate) fn check_form(
    s: &AppState,
    headers: &HeaderMap,
    expected: Option<&str>,
    given: Option<&str>,
) -> Result<(), ApiError> {
    check_origin(s, headers)?;
    if let Some(expected) = expected {
        if !given.is_some_and(|g| same(g, expected)) {
            return Err(ApiError::forbidden(
                "csrf",
                "the form is missing its security token or it is stale; reload the page and try again",
            ));
        }
    }
    Ok(())
}

fn check_origin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let public = s.settings.public_url.trim_end_matches('/');
    // The browser's view of this service is its Host, which may differ
    // from the public URL when reached directly.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = origin == public
        || (!host.is_empty()
            && (origin == format!("http://{host}") || origin == format!("https://{host}")));
    if own {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "cross_origin",
            format!("a form from `{origin}` is not accepted here"),
        ))
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
pub(crate) fn form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the form must be `application/x-www-form-urlencoded`",
        ));
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map_err(|e| ApiError::bad_request("invalid_form", format!("the form is malformed: {e}")))
}

pub(crate) fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Where to go after signing in: a dashboard path only, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/dashboard/")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n != "/dashboard/logout" =>
        {
            n.to_owned()
        }
        _ => "/dashboard/approvals".to_owned(),
    }
}

/// How the audit log names a session: the start of its id's hash, enough
/// to pair a sign-in with its sign-out and no help in forging the cookie.
fn session_ref(id_sha256: &str) -> &str {
    id_sha256.get(..16).unwrap_or(id_sha256)
}

fn session_cookie(s: &AppState, id: &str, max_age: i64) -> String {
    let secure = if s.settings.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

async fn login(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let f = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_page(None, &e),
    };
    // No session yet: the Origin check is what stops another site from
    // signing a browser in with the other site's token.
    if let Err(e) = check_form(&s, &headers, None, None) {
        return error_page(None, &e);
    }
    let next = safe_next(field(&f, "next"));
    let token = field(&f, "token").unwrap_or_default().trim();
    let now = now_ms();
    let claims = match crate::auth::verify(token, &s.keys.service_verifiers(), now / 1000) {
        Ok(c) if matches!(c.role, Role::Admin | Role::Approver | Role::Viewer) => c,
        Ok(c) => {
            return pages::login_page(
                StatusCode::FORBIDDEN,
                &next,
                &format!(
                    "a `{}` token cannot sign in to the dashboard",
                    c.role.as_str()
                ),
            )
        }
        Err(why) => {
            // Logged, not audited: a request without a valid token writes
            // nothing to the chain.
            tracing::info!(reason = %why, "dashboard sign-in refused");
            return pages::login_page(StatusCode::UNAUTHORIZED, &next, &why);
        }
    };
    let id = random_hex(32);
    let id_sha256 = sha256_hex(&id);
    let csrf = random_hex(32);
    let expires_ms =
        (claims.exp.saturating_mul(1000)).min(now.saturating_add(MAX_SESSION_SECS * 1000));
    let caller = Caller {
        role: claims.role,
        tenant: claims.tenant.clone(),
        subject: claims.sub.clone(),
    };
    let stored = async {
        let mut w = s.store.write().await?;
        // Sign-ins clear out the sessions that ran out.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_ms <= $1")
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_sha256, role, tenant, subject, csrf, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id_sha256)
        .bind(claims.role.as_str())
        .bind(&claims.tenant)
        .bind(&claims.sub)
        .bind(&csrf)
        .bind(now)
        .bind(expires_ms)
        .execute(&mut *w.tx)
        .await?;
        let data =
            serde_json::json!({"role": claims.role.as_str(), "expires_at": expires_ms / 1000,
                                      "session": session_ref(&id_sha256)})
            .to_string();
        w.audit(&NewEvent {
            at_ms: now,
            tenant: &claims.tenant,
            actor: &caller.actor(),
            kind: "dashboard.signin",
            subject: &claims.sub,
            data: &data,
        })
        .await?;
        w.commit().await
    };
    if let Err(e) = stored.await {
        return error_page(None, &e.into());
    }
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&s, &id, (expires_ms - now) / 1000)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn logout(
    State(s): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_page(Some(&session), &e),
    };
    if let Err(e) = check_form(&s, &headers, Some(&session.csrf), field(&f, "csrf")) {
        return error_page(Some(&session), &e);
    }
    let now = now_ms();
    let data = serde_json::json!({"session": session_ref(&session.id_sha256)}).to_string();
    let done = async {
        let mut w = s.store.write().await?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_sha256 = $1")
            .bind(&session.id_sha256)
            .execute(&mut *w.tx)
            .await?;
        w.audit(&NewEvent {
            at_ms: now,
            tenant: &session.caller.tenant,
            actor: &session.caller.actor(),
            kind: "dashboard.signout",
            subject: &session.caller.subject,
            data: &data,
        })
        .await?;
        w.commit().await
    };
    if let Err(e) = done.await {
        return error_page(Some(&session), &e.into());
    }
    let mut res = Redirect::to("/dashboard/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&s, "", 0)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(
            safe_next(Some("/dashboard/approvals/apr_1")),
            "/dashboard/approvals/apr_1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/dashboard/",
            "/v1/approvals",
            "/dashboard/\\evil",
            "/dashboard/logout",
        ] {
            assert_eq!(safe_next(Some(bad)), "/dashboard/approvals", "{bad}");
        }
        assert_eq!(safe_next(None), "/dashboard/approvals");
    }

    #[test]
    fn constant_time_equality() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
