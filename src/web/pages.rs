//! Rendering pages into the site layout, and the page for an address no route answers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppError, AppState};

/// Renders `pages/{name}.html` with `site` and `title` added to `context`.
pub fn render(
    state: &AppState,
    status: StatusCode,
    name: &str,
    title: &str,
    context: Value,
) -> Response {
    match html(state, name, title, context) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => AppError::from(e).in_plain_text().into_response(),
    }
}

/// The HTML of `pages/{name}.html` with `site` and `title` added to `context`.
pub fn html(
    state: &AppState,
    name: &str,
    title: &str,
    mut context: Value,
) -> Result<String, crate::mail::TemplateError> {
    context["site"] = json!({
        "name": state.config().site.name,
        "base_url": state.links().base_url(),
    });
    context["title"] = json!(title);
    state
        .templates()
        .render_html(&format!("pages/{name}.html"), &context)
}

/// A short message in the site layout, for errors.
pub fn message(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    render(
        state,
        status,
        "message",
        title,
        json!({ "message": message }),
    )
}

/// The page for an address no route answers.
pub async fn not_found(State(state): State<AppState>) -> Response {
    message(
        &state,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
    )
}
