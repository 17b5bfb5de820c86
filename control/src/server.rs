//! The HTTP service: routes, middleware (metrics, logs, body limits), and
//! a graceful shutdown. HTTP/1.1 and h2c on one listener.

use crate::api;
use crate::error::{ApiError, Error};
use crate::extract::HEADER_READ_TIMEOUT;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::time::{Duration, Instant};

pub fn router(state: AppState) -> Router {
    let json_limit = state.settings.body_limit;
    let api = Router::new()
        .route("/v1/budgets/lease", post(api::budgets::lease))
        .route("/v1/budgets/settle", post(api::budgets::settle))
        .route("/v1/budgets", get(api::budgets::show))
        .route(
            "/v1/approvals",
            post(api::approvals::create).get(api::approvals::list),
        )
        .route("/v1/approvals/{id}", get(api::approvals::show))
        .route("/v1/approvals/{id}/decision", post(api::approvals::decide))
        .route("/v1/approvals/{id}/redeem", post(api::approvals::redeem))
        .route("/v1/tokens", post(api::tokens::exchange))
        .route("/v1/agents", post(api::tokens::create_agent))
        .route("/v1/agents/{id}/revoke", post(api::tokens::revoke_agent))
        .route("/v1/agents/overview", get(api::agents::show))
        .route("/v1/keys/rotate", post(api::tokens::rotate))
        .route("/.well-known/jwks.json", get(api::tokens::jwks))
        .route("/v1/audit", get(api::audit::list))
        .route("/v1/audit/verify", get(api::audit::verify))
        .route("/v1/bundles/current", get(api::bundles::current))
        .route("/v1/notifications", get(crate::notify::outbox::list))
        .route(
            "/slack/interactions",
            post(crate::notify::slack::interactions),
        )
        .route("/v1/bundles/{revision}/explain", get(api::bundles::explain))
        .layer(axum::extract::DefaultBodyLimit::max(json_limit));
    let bundles = Router::new()
        .route(
            "/v1/bundles",
            post(api::bundles::publish).get(api::bundles::list),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::bundles::MAX_BUNDLE_BYTES,
        ));
    Router::new()
        .merge(api)
        .merge(bundles)
        .merge(crate::dashboard::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API call")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), s.store.ping()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store unreachable: timed out\n",
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render() + &s.notify.render_metrics(),
    )
        .into_response()
}

/// One JSON log line and the metrics for every request.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method()).to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = res.status().as_u16();
    s.metrics.request(&method, &route, status, secs);
    tracing::info!(
        target: "aegis_control::access",
        method = %method,
        path = %path,
        route = %route,
        status,
        ms = secs * 1000.0,
        "request"
    );
    res
}

/// The metrics label of a method: HTTP allows any token as a method, and
/// each new label would be a new series kept for the life of the process.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Serves until SIGINT/SIGTERM, then lets requests in flight finish.
pub async fn run(state: AppState, listener: tokio::net::TcpListener) -> Result<(), Error> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let app = router(state);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A connection that sends nothing never reaches hyper's header
            // timer (it waits to tell HTTP/1.1 from h2c first).
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
