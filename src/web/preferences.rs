//! `GET /preferences/{token}`: what a person receives, their name and time zone; `POST` saves
//! (and redirects back, so a reload does not post again). `GET …/data` downloads everything
//! kept about them as JSON; `POST …/erase` erases them, keeping only a keyed hash of the
//! address on the suppression list.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::client::ClientInfo;
use super::{AppError, AppState, pages};
use crate::domain::{SubscriberName, SubscriptionStatus, Timezone, TokenPurpose};
use crate::store::{ConsentMeta, Offering, SubscriberRef};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/preferences/{token}", get(preferences_page).post(save))
        .route("/preferences/{token}/data", get(download))
        .route("/preferences/{token}/erase", post(erase))
}

#[derive(serde::Deserialize)]
struct Saved {
    saved: Option<String>,
}

type FieldErrors = BTreeMap<&'static str, String>;

/// The person a preferences token points at; `Err` is the response to give instead.
async fn subscriber(state: &AppState, token: &str) -> Result<SubscriberRef, Response> {
    let now = state.clock().now_secs();
    let id = match state.links().verify(token, TokenPurpose::Preferences, now) {
        Ok(t) => t.subject,
        Err(e) => {
            tracing::info!(reason = %e, "preferences token refused");
            return Err(pages::invalid_link(state));
        }
    };
    match state.store().subscriber_by_id(id).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(pages::invalid_link(state)),
        Err(e) => Err(pages::error_page(state, e.into())),
    }
}

/// Offerings shown: every public one, plus any private one the person has.
async fn choices(state: &AppState, who: &SubscriberRef) -> Result<Vec<(Offering, bool)>, AppError> {
    let detail = state.store().subscriber_detail(&who.email).await?;
    let active: Vec<&str> = detail
        .as_ref()
        .map(|d| {
            d.subscriber
                .subscriptions
                .iter()
                .filter(|s| s.status != SubscriptionStatus::Unsubscribed)
                .map(|s| s.offering.as_str())
                .collect()
        })
        .unwrap_or_default();
    let has = |slug: &str| {
        detail.as_ref().is_some_and(|d| {
            d.subscriber
                .subscriptions
                .iter()
                .any(|s| s.offering == slug)
        })
    };
    Ok(state
        .store()
        .active_offerings()
        .await?
        .into_iter()
        .filter(|o| o.public || has(&o.slug))
        .map(|o| {
            let on = active.contains(&o.slug.as_str());
            (o, on)
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn page(
    state: &AppState,
    status: StatusCode,
    token: &str,
    who: &SubscriberRef,
    choices: &[(Offering, bool)],
    values: (&str, &str),
    errors: &FieldErrors,
    saved: bool,
) -> Response {
    let error = |field: &str| errors.get(field).map_or(Value::Null, |m| json!(m));
    pages::render(
        state,
        status,
        "preferences",
        "Your preferences",
        json!({
            "action": format!("/preferences/{token}"),
            "data_url": format!("/preferences/{token}/data"),
            "erase_action": format!("/preferences/{token}/erase"),
            "email": who.email.as_str(),
            "saved": saved,
            "offerings": choices.iter().map(|(o, on)| json!({
                "slug": o.slug, "name": o.name, "description": o.description, "checked": on,
            })).collect::<Vec<_>>(),
            "values": { "name": values.0, "timezone": values.1 },
            "errors": { "name": error("name"), "timezone": error("timezone"), "form": error("form") },
        }),
    )
}

async fn preferences_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(saved): Query<Saved>,
) -> Response {
    let who = match subscriber(&state, &token).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let choices = match choices(&state, &who).await {
        Ok(c) => c,
        Err(e) => return pages::error_page(&state, e),
    };
    page(
        &state,
        StatusCode::OK,
        &token,
        &who,
        &choices,
        (
            who.name.as_deref().unwrap_or(""),
            who.timezone.as_deref().unwrap_or(""),
        ),
        &FieldErrors::new(),
        saved.saved.is_some(),
    )
}

fn meta(client: ClientInfo) -> ConsentMeta {
    ConsentMeta {
        ip: client.ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent,
        text_hash: String::new(),
        source: "email",
    }
}

async fn save(
    State(state): State<AppState>,
    Path(token): Path<String>,
    client: ClientInfo,
    body: Bytes,
) -> Response {
    let who = match subscriber(&state, &token).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let mut choices = match choices(&state, &who).await {
        Ok(c) => c,
        Err(e) => return pages::error_page(&state, e),
    };
    let (mut name, mut timezone, mut wanted) = (String::new(), String::new(), Vec::new());
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "name" => name = v.into_owned(),
            "timezone" => timezone = v.into_owned(),
            "offerings" => wanted.push(v.into_owned()),
            _ => {}
        }
    }
    let mut errors = FieldErrors::new();
    let parsed_name = SubscriberName::parse(&name)
        .map_err(|e| errors.insert("name", e))
        .ok()
        .flatten();
    let parsed_zone = if timezone.trim().is_empty() {
        None
    } else {
        Timezone::parse(&timezone)
            .map_err(|e| errors.insert("timezone", e))
            .ok()
    };
    if wanted
        .iter()
        .any(|slug| !choices.iter().any(|(o, _)| &o.slug == slug))
    {
        errors.insert("form", "One of the offerings chosen does not exist.".into());
    }
    for (o, on) in choices.iter_mut() {
        *on = wanted.contains(&o.slug);
    }
    if !errors.is_empty() {
        return page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &token,
            &who,
            &choices,
            (&name, &timezone),
            &errors,
            false,
        );
    }
    let ids: Vec<i64> = choices
        .iter()
        .filter(|(_, on)| *on)
        .map(|(o, _)| o.id)
        .collect();
    if let Err(e) = state
        .store()
        .update_preferences(
            who.id,
            parsed_name.as_ref(),
            parsed_zone.as_ref(),
            &ids,
            &meta(client),
            state.clock().now_ms(),
        )
        .await
    {
        return pages::error_page(&state, e.into());
    }
    Redirect::to(&format!("/preferences/{token}?saved=1")).into_response()
}

async fn download(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let who = match subscriber(&state, &token).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    match state.store().subscriber_data(who.id).await {
        Ok(Some(detail)) => {
            let body = serde_json::to_string_pretty(&detail).unwrap_or_default();
            (
                [
                    (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"my-data.json\"",
                    ),
                ],
                body,
            )
                .into_response()
        }
        Ok(None) => pages::invalid_link(&state),
        Err(e) => pages::error_page(&state, e.into()),
    }
}

async fn erase(State(state): State<AppState>, Path(token): Path<String>, body: Bytes) -> Response {
    let who = match subscriber(&state, &token).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let confirmed = form_urlencoded::parse(&body).any(|(k, v)| k == "confirm" && v == "yes");
    if !confirmed {
        let choices = match choices(&state, &who).await {
            Ok(c) => c,
            Err(e) => return pages::error_page(&state, e),
        };
        let mut errors = FieldErrors::new();
        errors.insert(
            "form",
            "To erase your data, tick the box that says you want it erased.".into(),
        );
        return page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &token,
            &who,
            &choices,
            (
                who.name.as_deref().unwrap_or(""),
                who.timezone.as_deref().unwrap_or(""),
            ),
            &errors,
            false,
        );
    }
    let hash = state.links().email_hash(&who.email);
    match state
        .store()
        .erase_subscriber(who.id, &hash, state.clock().now_ms())
        .await
    {
        Ok(_) => {
            tracing::info!(subscriber = who.id, "subscriber erased");
            pages::render(&state, StatusCode::OK, "erased", "Erased", json!({}))
        }
        Err(e) => pages::error_page(&state, e.into()),
    }
}
