//! `GET /confirm/{token}` shows one button and changes nothing (mail scanners fetch links);
//! `POST /confirm/{token}` confirms. Confirming again is harmless.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::client::ClientInfo;
use super::{AppError, AppState, ErrorKind, pages};
use crate::domain::{ConsentSource, LinkTarget, TokenPurpose};
use crate::store::Offering;

/// The confirmation routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/confirm/{token}", get(confirm_page).post(confirm))
}

/// The signup (consent record) a valid confirmation token names.
fn consent(state: &AppState, token: &str) -> Result<LinkTarget, AppError> {
    let now = state.clock().now_secs();
    match state.links().verify(token, TokenPurpose::Confirm, now) {
        Ok(t) => Ok(t.target()),
        Err(e) => {
            tracing::info!(reason = %e, "confirmation token refused");
            Err(ErrorKind::InvalidLink.into())
        }
    }
}

/// The offerings of a signup, as the pages list them.
fn names(offerings: &[Offering]) -> Vec<Value> {
    offerings
        .iter()
        .map(|o| json!({ "name": o.name }))
        .collect()
}

async fn confirm_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let id = consent(&state, &token)?;
    let signup = state
        .store()
        .pending_confirmation(id)
        .await?
        .ok_or(ErrorKind::InvalidLink)?;
    Ok(if signup.waiting {
        pages::render(
            &state,
            StatusCode::OK,
            "confirm",
            "Confirm your subscription",
            json!({
                "action": format!("/confirm/{token}"),
                "offerings": names(&signup.offerings),
            }),
        )
    } else {
        // Confirmed already (or left since): say so, instead of a button that does nothing.
        pages::render(
            &state,
            StatusCode::OK,
            "welcome",
            "Already confirmed",
            json!({ "already": true, "offerings": names(&signup.offerings) }),
        )
    })
}

async fn confirm(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let id = consent(&state, &token)?;
    let meta = client.consent(state.consent_hash().to_owned(), ConsentSource::Form);
    let signup = state
        .store()
        .confirm_signup(id, &meta, state.clock().now_ms())
        .await?
        .ok_or(ErrorKind::InvalidLink)?;
    tracing::info!(subscriber = signup.subscriber_id, "signup confirmed");
    state.metrics().confirmation();
    // Confirmed from their own inbox: a bounce or a complaint no longer holds them back.
    if let Some(who) = state.store().subscriber_by_id(signup.subscriber_id).await? {
        let hashes = state.links().email_hashes(&who.email);
        if state.store().lift_bounce_suppression(&hashes).await? > 0 {
            tracing::info!(
                subscriber = who.id,
                "suppression lifted by a new confirmation"
            );
        }
    }
    Ok(pages::render(
        &state,
        StatusCode::OK,
        "welcome",
        "Welcome",
        json!({ "already": false, "offerings": names(&signup.offerings) }),
    ))
}
