//! How handlers read a request: JSON bodies, query strings and path
//! parameters whose errors have the API's shape, and how long a client
//! may take to send them.

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long a client may take to send a request's headers, from the
/// connection's first byte or the end of its previous request; also how
/// long a new connection may stay silent, and how long a JSON body may
/// take to arrive. Without it a client that opens
/// connections and sends nothing (or half a request) holds them forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// JSON bodies of API calls: unknown fields, bad types and bad JSON are a
/// 400 naming the problem, a missing content type a 415, in the API's
/// error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        // The header timeout ends with the headers: a body trickled in
        // byte by byte (`POST /v1/tokens` needs no credential) would hold
        // the connection for ever.
        let read = tokio::time::timeout(
            HEADER_READ_TIMEOUT,
            axum::Json::<T>::from_request(req, state),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} seconds",
                    HEADER_READ_TIMEOUT.as_secs()
                ),
            )
        })?;
        match read {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with `content-type: application/json`",
            )),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(
                "invalid_body",
                format!("the body does not match this call: {}", e.body_text()),
            )),
            Err(JsonRejection::BytesRejection(e)) => Err(body_error(e.status(), e.body_text())),
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// Query strings, with the same error shape as bodies.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// Path parameters (ids), with the same error shape: an id that is not
/// UTF-8 is a 400 `invalid_path`, not a plain-text answer.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
    }
}

pub fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "body_too_large",
            "the body is larger than this call accepts",
        )
    } else {
        ApiError::new(status, "invalid_body", text)
    }
}
