//! `GET /confirm/{token}` shows one button and changes nothing (mail scanners fetch links);
//! `POST /confirm/{token}` confirms. Confirming again is harmless.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::client::ClientInfo;
use super::{AppState, pages};
use crate::domain::{LinkTarget, TokenPurpose};
use crate::store::ConsentMeta;

pub fn routes() -> Router<AppState> {
    Router::new().route("/confirm/{token}", get(confirm_page).post(confirm))
}

/// The signup (consent record) a valid confirmation token names.
fn consent(state: &AppState, token: &str) -> Option<LinkTarget> {
    let now = state.clock().now_secs();
    match state.links().verify(token, TokenPurpose::Confirm, now) {
        Ok(t) => Some(t.target()),
        Err(e) => {
            tracing::info!(reason = %e, "confirmation token refused");
            None
        }
    }
}

async fn confirm_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(id) = consent(&state, &token) else {
        return pages::invalid_link(&state);
    };
    match state.store().pending_confirmation(id).await {
        // Confirmed already (or left since): say so, instead of a button that does nothing.
        Ok(Some(signup)) if !signup.waiting => pages::render(
            &state,
            StatusCode::OK,
            "welcome",
            "Already confirmed",
            json!({
                "already": true,
                "offerings": signup.offerings.iter().map(|o| json!({ "name": o.name })).collect::<Vec<_>>(),
            }),
        ),
        Ok(Some(signup)) => pages::render(
            &state,
            StatusCode::OK,
            "confirm",
            "Confirm your subscription",
            json!({
                "action": format!("/confirm/{token}"),
                "offerings": signup.offerings.iter().map(|o| json!({ "name": o.name })).collect::<Vec<_>>(),
            }),
        ),
        Ok(None) => pages::invalid_link(&state),
        Err(e) => pages::error_page(&state, e.into()),
    }
}

async fn confirm(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(token): Path<String>,
) -> Response {
    let Some(id) = consent(&state, &token) else {
        return pages::invalid_link(&state);
    };
    let meta = ConsentMeta {
        ip: client.ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent,
        text_hash: state.consent_hash().to_owned(),
        source: "form",
    };
    match state
        .store()
        .confirm_signup(id, &meta, state.clock().now_ms())
        .await
    {
        Ok(Some(signup)) => {
            tracing::info!(subscriber = signup.subscriber_id, "signup confirmed");
            pages::render(
                &state,
                StatusCode::OK,
                "welcome",
                "Welcome",
                json!({
                    "already": false,
                    "offerings": signup.offerings.iter().map(|o| json!({ "name": o.name })).collect::<Vec<_>>(),
                }),
            )
        }
        Ok(None) => pages::invalid_link(&state),
        Err(e) => pages::error_page(&state, e.into()),
    }
}
