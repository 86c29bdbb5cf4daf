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
    mut context: Value,
) -> Response {
    context["site"] = json!({
        "name": state.config().site.name,
        "base_url": state.links().base_url(),
    });
    context["title"] = json!(title);
    match state
        .templates()
        .render_html(&format!("pages/{name}.html"), &context)
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => AppError::from(e).in_plain_text().into_response(),
    }
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
