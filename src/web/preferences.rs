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
use crate::domain::{
    OfferingKind, Slug, SubscriberName, SubscriptionStatus, Timezone, TokenPurpose,
};
use crate::store::{ConsentMeta, Offering, SubscriberRef};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/preferences/{token}", get(preferences_page).post(save))
        .route("/preferences/{token}/data", get(download))
        .route("/preferences/{token}/erase", post(erase))
        .route("/preferences/{token}/course", post(course))
}

#[derive(serde::Deserialize)]
struct Saved {
    saved: Option<String>,
    /// `paused` or `resumed` after a course button.
    course: Option<String>,
}

type FieldErrors = BTreeMap<&'static str, String>;

/// The person a preferences token points at; `Err` is the response to give instead.
async fn subscriber(state: &AppState, token: &str) -> Result<SubscriberRef, Response> {
    let now = state.clock().now_secs();
    let link = match state.links().verify(token, TokenPurpose::Preferences, now) {
        Ok(t) => t.target(),
        Err(e) => {
            tracing::info!(reason = %e, "preferences token refused");
            return Err(pages::invalid_link(state));
        }
    };
    match state.store().subscriber_by_link(link).await {
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
    courses: &CourseViews,
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
            "course_action": format!("/preferences/{token}/course"),
            "email": who.email.as_str(),
            "saved": saved,
            "offerings": choices.iter().map(|(o, on)| json!({
                "slug": o.slug, "name": o.name, "description": o.description, "checked": on,
            })).collect::<Vec<_>>(),
            "values": { "name": values.0, "timezone": values.1 },
            "courses": courses.items,
            "course_notice": courses.notice,
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
    let mut courses = match course_views(&state, &who).await {
        Ok(c) => c,
        Err(e) => return pages::error_page(&state, e),
    };
    courses.notice = match saved.course.as_deref() {
        Some("paused") => Some("Your course is paused. Resume it whenever you are ready."),
        Some("resumed") => Some("Your course continues with its next lesson."),
        _ => None,
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
        &courses,
    )
}

/// The courses a person follows, with where they are and a pause or resume button.
#[derive(Default)]
struct CourseViews {
    items: Vec<Value>,
    notice: Option<&'static str>,
}

async fn course_views(state: &AppState, who: &SubscriberRef) -> Result<CourseViews, AppError> {
    let Some(detail) = state.store().subscriber_detail(&who.email).await? else {
        return Ok(CourseViews::default());
    };
    let courses = state.courses();
    let items = detail
        .courses
        .iter()
        .filter(|c| {
            detail
                .subscriber
                .subscriptions
                .iter()
                .any(|s| s.offering == c.offering && s.status == SubscriptionStatus::Confirmed)
        })
        .map(|c| {
            json!({
                "slug": c.offering,
                "name": c.offering_name,
                "text": courses.describe_for_person(c, who.timezone.as_deref()),
                "can_pause": c.state == crate::store::CourseState::Active,
                "can_resume": c.state == crate::store::CourseState::Paused,
            })
        })
        .collect();
    Ok(CourseViews {
        items,
        notice: None,
    })
}

/// `POST /preferences/{token}/course`: `offering=SLUG&action=pause|resume`.
async fn course(State(state): State<AppState>, Path(token): Path<String>, body: Bytes) -> Response {
    let who = match subscriber(&state, &token).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let (mut slug, mut action) = (String::new(), String::new());
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "offering" => slug = v.into_owned(),
            "action" => action = v.into_owned(),
            _ => {}
        }
    }
    let offering = match Slug::parse(&slug) {
        Ok(slug) => match state.store().offering_by_slug(&slug).await {
            Ok(o) => o.filter(|o| o.kind == OfferingKind::Course),
            Err(e) => return pages::error_page(&state, e.into()),
        },
        Err(_) => None,
    };
    let courses = state.courses();
    let now = state.clock().now_ms();
    let done = match (offering, action.as_str()) {
        (Some(o), "pause") => courses
            .pause(state.store(), who.id, o.id, now)
            .await
            .map(|r| {
                matches!(
                    r,
                    crate::courses::PauseOutcome::Paused
                        | crate::courses::PauseOutcome::NotActive(
                            crate::store::CourseState::Paused
                        )
                )
                .then_some("paused")
            }),
        (Some(o), "resume") => courses
            .resume(state.store(), who.id, o.id, now)
            .await
            .map(|r| matches!(r, crate::courses::ResumeOutcome::Resumed(_)).then_some("resumed")),
        _ => Ok(None),
    };
    match done {
        Ok(Some(word)) => {
            Redirect::to(&format!("/preferences/{token}?course={word}")).into_response()
        }
        Ok(None) => {
            let choices = match choices(&state, &who).await {
                Ok(c) => c,
                Err(e) => return pages::error_page(&state, e),
            };
            let courses = match course_views(&state, &who).await {
                Ok(c) => c,
                Err(e) => return pages::error_page(&state, e),
            };
            let mut errors = FieldErrors::new();
            errors.insert(
                "form",
                "That course cannot be paused or resumed from here just now.".into(),
            );
            page(
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
                &courses,
            )
        }
        Err(e) => pages::error_page(&state, e.into()),
    }
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
        let courses = match course_views(&state, &who).await {
            Ok(c) => c,
            Err(e) => return pages::error_page(&state, e),
        };
        return page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &token,
            &who,
            &choices,
            (&name, &timezone),
            &errors,
            false,
            &courses,
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
        let courses = match course_views(&state, &who).await {
            Ok(c) => c,
            Err(e) => return pages::error_page(&state, e),
        };
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
            &courses,
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
