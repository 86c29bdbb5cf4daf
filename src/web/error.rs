//! The one error type of the web layer. 4xx carry a message a person can act on; 5xx are
//! logged with their cause chain and shown only as a generic sentence.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests; try again in {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(e.into())
    }
}

impl From<crate::mail::TemplateError> for AppError {
    fn from(e: crate::mail::TemplateError) -> Self {
        AppError::Internal(e.into())
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The sentence shown to the client: never the cause of a 500.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal(_) => {
                "Something went wrong on our side. Please try again in a little while.".into()
            }
            other => other.to_string(),
        }
    }

    fn log(&self) {
        if let AppError::Internal(e) = self {
            tracing::error!(error = ?e, "request failed");
        }
    }

    fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            AppError::TooManyRequests { retry_after_secs } => {
                HeaderValue::from_str(&retry_after_secs.to_string()).ok()
            }
            _ => None,
        }
    }

    /// The error as a JSON body `{"error": "..."}`.
    pub fn into_json_response(self) -> Response {
        self.log();
        let mut response = (
            self.status(),
            Json(json!({ "error": self.public_message() })),
        )
            .into_response();
        if let Some(v) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }

    /// Adds `Retry-After` where it applies to an already rendered response.
    pub fn decorate(&self, mut response: Response) -> Response {
        self.log();
        *response.status_mut() = self.status();
        if let Some(v) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Plain-text fallback, for handlers that have no page to render the error into.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status(), self.public_message()).into_response();
        if let Some(v) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
