//! The one error type of the web layer, and how it becomes an answer: a page in the site layout
//! for the form routes, JSON for the JSON API. 4xx carry a message a person can act on; 5xx are
//! logged once with their cause chain and shown only as a generic sentence.
//!
//! A page needs the templates, which an [`IntoResponse`] has no way to reach: an error to be
//! shown as a page answers with its status and headers and an [`ErrorPage`] extension, and
//! [`render_error_pages`], a layer of the router, renders that into the body.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, pages};

/// Why a request failed, and whether its answer is a page or JSON (a page unless told).
#[derive(Debug)]
pub struct AppError {
    kind: ErrorKind,
    answer: Answer,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// A request the client can correct; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// A body that could not be read to its end.
    #[error("The request could not be read.")]
    UnreadableBody,
    /// A body over the route's limit ([`super::MAX_BODY_BYTES`] unless the route sets its own).
    #[error("The request is too large (the limit is {limit_kib} KiB).")]
    PayloadTooLarge { limit_kib: usize },
    /// Not shown to come from whom the route answers (a webhook's provider); says what failed.
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing answers at this address (a webhook that is not configured).
    #[error("There is nothing at this address.")]
    NotFound,
    /// A body in a format the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Over a rate limit; answered with `Retry-After`.
    #[error("too many requests; try again in {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    /// An unknown, expired or tampered link, or one naming someone no longer there.
    #[error("This link is not valid.")]
    InvalidLink,
    /// Our fault: logged, never shown.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// The form of an error's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A page in the site layout.
    Page,
    /// `{"error": "..."}`.
    Json,
    /// Plain text: for when the page itself could not be rendered.
    Text,
}

impl From<ErrorKind> for AppError {
    fn from(kind: ErrorKind) -> Self {
        AppError {
            kind,
            answer: Answer::Page,
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        ErrorKind::Internal(e).into()
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl From<crate::mail::TemplateError> for AppError {
    fn from(e: crate::mail::TemplateError) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl AppError {
    /// A request the client can correct, with the sentence that says how.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ErrorKind::BadRequest(message.into()).into()
    }

    /// A body in a format this route does not take.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ErrorKind::UnsupportedMediaType(message.into()).into()
    }

    /// Over a rate limit; the answer carries `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        ErrorKind::TooManyRequests { retry_after_secs }.into()
    }

    /// The same error, answered with JSON instead of a page.
    pub fn in_json(self) -> Self {
        self.answered(Answer::Json)
    }

    /// The same error, answered with JSON when `json` is true.
    pub fn in_json_if(self, json: bool) -> Self {
        if json { self.in_json() } else { self }
    }

    /// The same error, answered as plain text (when rendering a page is what failed).
    pub(super) fn in_plain_text(self) -> Self {
        self.answered(Answer::Text)
    }

    fn answered(self, answer: Answer) -> Self {
        AppError { answer, ..self }
    }

    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest(_) | ErrorKind::UnreadableBody => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::InvalidLink => StatusCode::NOT_FOUND,
            ErrorKind::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The sentence shown to the client: never the cause of a 500.
    pub fn public_message(&self) -> String {
        match self.kind {
            ErrorKind::Internal(_) => {
                "Something went wrong on our side. Please try again in a little while.".into()
            }
            ref other => other.to_string(),
        }
    }

    /// The page that shows this error.
    fn page(&self) -> ErrorPage {
        let message = |title| ErrorPage {
            name: "message",
            title,
            context: json!({ "message": self.public_message() }),
        };
        match self.kind {
            ErrorKind::InvalidLink => ErrorPage {
                name: "token_invalid",
                title: "Link not valid",
                context: json!({}),
            },
            ErrorKind::PayloadTooLarge { .. } => message("Too large"),
            ErrorKind::Unauthorized(_) => message("Not allowed"),
            ErrorKind::NotFound => message("Not found"),
            ErrorKind::UnreadableBody => message("Not understood"),
            ErrorKind::TooManyRequests { .. } => message("Please slow down"),
            ErrorKind::Internal(_) => message("Something went wrong"),
            ErrorKind::BadRequest(_) | ErrorKind::UnsupportedMediaType(_) => {
                message("That did not work")
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let ErrorKind::Internal(e) = &self.kind {
            // The cause chain; handlers put no link token or secret into their errors.
            tracing::error!(error = ?e, "request failed");
        }
        let status = self.status();
        let mut response = match self.answer {
            Answer::Json => {
                (status, Json(json!({ "error": self.public_message() }))).into_response()
            }
            Answer::Text => (status, self.public_message()).into_response(),
            Answer::Page => {
                let mut response = status.into_response();
                response.extensions_mut().insert(self.page());
                response
            }
        };
        if let ErrorKind::TooManyRequests { retry_after_secs } = self.kind {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// A page still to be rendered into an error answer: `pages/{name}.html` with `context`.
#[derive(Clone)]
struct ErrorPage {
    name: &'static str,
    title: &'static str,
    context: Value,
}

/// Renders the [`ErrorPage`] of an answer into its body, keeping its status and headers.
pub(super) async fn render_error_pages(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let Some(page) = response.extensions_mut().remove::<ErrorPage>() else {
        return response;
    };
    let (parts, _) = response.into_parts();
    let mut rendered = pages::render(&state, parts.status, page.name, page.title, page.context);
    *rendered.status_mut() = parts.status;
    rendered.headers_mut().extend(parts.headers);
    rendered
}

/// Whether a request's body is JSON, by its `Content-Type`.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"))
}
