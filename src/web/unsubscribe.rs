//! Leaving: `GET /unsubscribe/{token}` shows the choices and changes nothing; a `POST` to the
//! same URL unsubscribes at once. The POST is what mailbox providers send for RFC 8058
//! one-click unsubscribe (`List-Unsubscribe=One-Click`, urlencoded or multipart, no cookies):
//! it leaves the offering the email was sent for, answers 200 and never redirects. The page's
//! "everything" button posts `scope=everything`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::client::ClientInfo;
use super::{AppError, AppState, ErrorKind, pages};
use crate::domain::{ConsentSource, LinkTarget, TokenPurpose};

/// The unsubscribe routes (page and one-click).
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/unsubscribe/{token}",
        get(unsubscribe_page).post(unsubscribe),
    )
}

/// (subscriber, offering id) of a valid unsubscribe token.
fn claims(state: &AppState, token: &str) -> Result<(LinkTarget, i64), AppError> {
    let now = state.clock().now_secs();
    match state.links().verify(token, TokenPurpose::Unsubscribe, now) {
        Ok(t) => Ok((t.target(), t.scope)),
        Err(e) => {
            tracing::info!(reason = %e, "unsubscribe token refused");
            Err(ErrorKind::InvalidLink.into())
        }
    }
}

/// Whether the person a link names still exists (the same person: id and link secret).
async fn still_there(state: &AppState, subscriber: LinkTarget) -> Result<bool, AppError> {
    Ok(state
        .store()
        .subscriber_by_link(subscriber)
        .await?
        .is_some())
}

async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let (subscriber, offering_id) = claims(&state, &token)?;
    if !still_there(&state, subscriber).await? {
        return Err(ErrorKind::InvalidLink.into());
    }
    let offering = state
        .store()
        .offering_by_id(offering_id)
        .await?
        .ok_or(ErrorKind::InvalidLink)?;
    Ok(pages::render(
        &state,
        StatusCode::OK,
        "unsubscribe",
        "Unsubscribe",
        json!({
            "action": format!("/unsubscribe/{token}"),
            "offering": { "name": offering.name },
            "preferences_url": state.links().preferences_url(subscriber),
        }),
    ))
}

/// Which button was pressed; anything else (the one-click body, an empty body) means "this
/// offering".
async fn wants_everything(state: &AppState, request: Request) -> bool {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let Ok(mut form) = Multipart::from_request(request, state).await else {
            return false;
        };
        while let Ok(Some(field)) = form.next_field().await {
            if field.name() == Some("scope") {
                return field.text().await.is_ok_and(|v| v == "everything");
            }
        }
        false
    } else {
        let Ok(body) = Bytes::from_request(request, state).await else {
            return false;
        };
        form_urlencoded::parse(&body).any(|(k, v)| k == "scope" && v == "everything")
    }
}

async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
    client: ClientInfo,
    request: Request,
) -> Result<Response, AppError> {
    let (subscriber, offering_id) = claims(&state, &token)?;
    // A person who is gone (erased, or never the one this id now names) has nothing to leave.
    // The answer is still 200: a mailbox provider reads any other answer to its one-click POST
    // (RFC 8058) as a failed unsubscribe and tells the recipient so. Nothing is changed.
    let present = still_there(&state, subscriber).await?;
    let subscriber_id = subscriber.id;
    let everything = wants_everything(&state, request).await;
    let meta = client.consent(String::new(), ConsentSource::Email);
    let scope = (!everything).then_some(offering_id);
    let left = if present {
        state
            .store()
            .unsubscribe(subscriber_id, scope, &meta, state.clock().now_ms())
            .await?
    } else {
        Vec::new()
    };
    tracing::info!(
        subscriber = subscriber_id,
        offerings = left.len(),
        everything,
        "unsubscribed"
    );
    state.metrics().unsubscribes(left.len());
    let name = match state.store().offering_by_id(offering_id).await {
        Ok(Some(o)) => o.name,
        _ => String::new(),
    };
    Ok(pages::render(
        &state,
        StatusCode::OK,
        "unsubscribed",
        "Unsubscribed",
        json!({
            "everything": everything,
            "offering": { "name": name },
            "preferences_url": state.links().preferences_url(subscriber),
        }),
    ))
}
