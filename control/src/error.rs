//! The API's one error type: an HTTP status, a stable machine code and a
//! sentence, answered as `{"error": {"type", "code", "message"}}` (the shape
//! REST SDKs already parse).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Fields added to the error object for a client that acts on them
    /// (who denied an approval, and why).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error with `details` added to its error object.
    pub fn with_details(mut self, details: serde_json::Map<String, serde_json::Value>) -> Self {
        self.details = Some(details);
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 | 410 => "conflict_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 => "unavailable_error",
            _ => "api_error",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::Map::new();
        error.insert("type".into(), self.kind().into());
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        for (k, v) in self.details.into_iter().flatten() {
            error.entry(k).or_insert(v);
        }
        let body = serde_json::json!({ "error": error });
        (self.status, Json(body)).into_response()
    }
}

/// A store failure seen by a handler: the store being unreachable is a
/// 503 (retry later), anything else a 500 whose cause is logged, not sent.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&e) {
            tracing::warn!(error = %e, "store unavailable");
            ApiError::unavailable("the store is unavailable; retry later")
        } else {
            tracing::error!(error = %e, "store error");
            ApiError::internal("store error")
        }
    }
}

/// Errors that stop `aegis serve` (or an admin command) from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported database url `{0}`: use sqlite://PATH or postgres://...")]
    DbUrl(String),
    #[error("cannot open the store `{url}`: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the store: {0}")]
    Migrate(sqlx::Error),
    #[error("store error: {0}")]
    Store(#[from] sqlx::Error),
    #[error("cannot listen on `{addr}`: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("service key: {0}")]
    Key(String),
    #[error("bundle: {0}")]
    Bundle(String),
    #[error("{0}")]
    Usage(String),
}
