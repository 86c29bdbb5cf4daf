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
use super::{AppError, AppState, ErrorKind, pages};
use crate::clock::format_ms;
use crate::courses::{PauseOutcome, ResumeOutcome};
use crate::domain::{
    ConsentSource, OfferingKind, Slug, SubscriberName, SubscriptionStatus, SuppressionReason,
    Timezone, TokenPurpose,
};
use crate::store::{CourseState, NewSignup, Offering, SubscriberDetail, SubscriberRef};

/// The preferences page routes.
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

/// The person a preferences token points at.
async fn subscriber(state: &AppState, token: &str) -> Result<SubscriberRef, AppError> {
    let now = state.clock().now_secs();
    let link = match state.links().verify(token, TokenPurpose::Preferences, now) {
        Ok(t) => t.target(),
        Err(e) => {
            tracing::info!(reason = %e, "preferences token refused");
            return Err(ErrorKind::InvalidLink.into());
        }
    };
    Ok(state
        .store()
        .subscriber_by_link(link)
        .await?
        .ok_or(ErrorKind::InvalidLink)?)
}

/// What is stored about the person: their subscriptions and courses. Read once per request
/// and handed to what the page needs of it.
async fn detail_of(
    state: &AppState,
    who: &SubscriberRef,
) -> Result<Option<SubscriberDetail>, AppError> {
    Ok(state.store().subscriber_detail(&who.email).await?)
}

/// Offerings shown: every public one, plus any private one the person has.
async fn choices(
    state: &AppState,
    detail: Option<&SubscriberDetail>,
) -> Result<Vec<(Offering, bool)>, AppError> {
    let active: Vec<&str> = detail
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
        detail.is_some_and(|d| {
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

/// The slugs of the offerings the person receives now.
fn confirmed_offerings(detail: Option<&SubscriberDetail>) -> Vec<&str> {
    detail
        .map(|d| {
            d.subscriber
                .subscriptions
                .iter()
                .filter(|s| s.status == SubscriptionStatus::Confirmed)
                .map(|s| s.offering.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// What the preferences page shows.
struct View<'a> {
    who: &'a SubscriberRef,
    /// Each offering shown, and whether it is ticked.
    choices: Vec<(Offering, bool)>,
    /// The name and time zone in the fields.
    values: (&'a str, &'a str),
    errors: FieldErrors,
    saved: bool,
    /// A confirmation email went out for the offerings chosen again after mail stopped.
    confirm_sent: bool,
    /// Why mail to this person stopped, when a bounce or a complaint stopped it.
    stopped: Option<String>,
    courses: CourseViews,
}

/// Why mail to this person stopped, in their words, when a bounce or a complaint stopped it
/// (the address is on the suppression list for that reason).
async fn stopped(state: &AppState, who: &SubscriberRef) -> Result<Option<String>, AppError> {
    let hashes = state.links().email_hashes(&who.email);
    let Some((reason, at)) = state.store().suppression(&hashes).await? else {
        return Ok(None);
    };
    let day = format_ms(at).chars().take(10).collect::<String>();
    Ok(match reason {
        SuppressionReason::Bounced => Some(format!(
            "We stopped sending to you on {day}: your mail server told us this address could \
             not receive our emails."
        )),
        SuppressionReason::Complained => Some(format!(
            "We stopped sending to you on {day}, because one of our emails was marked as spam \
             in your mailbox."
        )),
        SuppressionReason::Erased | SuppressionReason::Owner => None,
    })
}

impl<'a> View<'a> {
    /// The page as stored: the person's offerings, name, time zone and courses.
    async fn load(state: &AppState, who: &'a SubscriberRef) -> Result<Self, AppError> {
        let detail = detail_of(state, who).await?;
        Ok(View {
            who,
            choices: choices(state, detail.as_ref()).await?,
            values: (
                who.name.as_deref().unwrap_or(""),
                who.timezone.as_deref().unwrap_or(""),
            ),
            errors: FieldErrors::new(),
            saved: false,
            confirm_sent: false,
            stopped: stopped(state, who).await?,
            courses: course_views(state, who, detail.as_ref()),
        })
    }

    /// The stored page again, with `message` above the form (422).
    async fn refused(
        state: &AppState,
        token: &str,
        who: &'a SubscriberRef,
        message: &str,
    ) -> Result<Response, AppError> {
        let mut view = View::load(state, who).await?;
        view.errors.insert("form", message.into());
        Ok(view.render(state, StatusCode::UNPROCESSABLE_ENTITY, token))
    }

    fn render(&self, state: &AppState, status: StatusCode, token: &str) -> Response {
        let error = |field: &str| self.errors.get(field).map_or(Value::Null, |m| json!(m));
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
                "email": self.who.email.as_str(),
                "saved": self.saved,
                "confirm_sent": self.confirm_sent,
                "stopped": self.stopped,
                "offerings": self.choices.iter().map(|(o, on)| json!({
                    "slug": o.slug, "name": o.name, "description": o.description, "checked": on,
                })).collect::<Vec<_>>(),
                "values": { "name": self.values.0, "timezone": self.values.1 },
                "courses": self.courses.items,
                "course_notice": self.courses.notice,
                "errors": { "name": error("name"), "timezone": error("timezone"), "form": error("form") },
            }),
        )
    }
}

async fn preferences_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(saved): Query<Saved>,
) -> Result<Response, AppError> {
    let who = subscriber(&state, &token).await?;
    let mut view = View::load(&state, &who).await?;
    view.saved = saved.saved.is_some();
    view.confirm_sent = saved.saved.as_deref() == Some("confirm");
    view.courses.notice = match saved.course.as_deref() {
        Some("paused") => Some("Your course is paused. Resume it whenever you are ready."),
        Some("resumed") => Some("Your course continues with its next lesson."),
        _ => None,
    };
    Ok(view.render(&state, StatusCode::OK, &token))
}

/// The courses a person follows, with where they are and a pause or resume button.
#[derive(Default)]
struct CourseViews {
    items: Vec<Value>,
    notice: Option<&'static str>,
}

fn course_views(
    state: &AppState,
    who: &SubscriberRef,
    detail: Option<&SubscriberDetail>,
) -> CourseViews {
    let Some(detail) = detail else {
        return CourseViews::default();
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
                "can_pause": c.state == CourseState::Active,
                "can_resume": c.state == CourseState::Paused,
            })
        })
        .collect();
    CourseViews {
        items,
        notice: None,
    }
}

/// `POST /preferences/{token}/course`: `offering=SLUG&action=pause|resume`.
async fn course(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let who = subscriber(&state, &token).await?;
    let (mut slug, mut action) = (String::new(), String::new());
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "offering" => slug = v.into_owned(),
            "action" => action = v.into_owned(),
            _ => {}
        }
    }
    let offering = match Slug::parse(&slug) {
        Ok(slug) => state
            .store()
            .offering_by_slug(&slug)
            .await?
            .filter(|o| o.kind == OfferingKind::Course),
        Err(_) => None,
    };
    let courses = state.courses();
    let now = state.clock().now_ms();
    let done = match (offering, action.as_str()) {
        (Some(o), "pause") => {
            let outcome = courses.pause(state.store(), who.id, o.id, now).await?;
            matches!(
                outcome,
                PauseOutcome::Paused | PauseOutcome::NotActive(CourseState::Paused)
            )
            .then_some("paused")
        }
        (Some(o), "resume") => {
            let outcome = courses.resume(state.store(), who.id, o.id, now).await?;
            matches!(outcome, ResumeOutcome::Resumed(_)).then_some("resumed")
        }
        _ => None,
    };
    match done {
        Some(word) => {
            Ok(Redirect::to(&format!("/preferences/{token}?course={word}")).into_response())
        }
        None => {
            let message = "That course cannot be paused or resumed from here just now.";
            View::refused(&state, &token, &who, message).await
        }
    }
}

async fn save(
    State(state): State<AppState>,
    Path(token): Path<String>,
    client: ClientInfo,
    body: Bytes,
) -> Result<Response, AppError> {
    let who = subscriber(&state, &token).await?;
    let detail = detail_of(&state, &who).await?;
    let mut choices = choices(&state, detail.as_ref()).await?;
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
        .map_err(|e| errors.insert("name", e.to_string()))
        .ok()
        .flatten();
    let parsed_zone = if timezone.trim().is_empty() {
        None
    } else {
        Timezone::parse(&timezone)
            .map_err(|e| errors.insert("timezone", e.to_string()))
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
        let view = View {
            who: &who,
            choices,
            values: (&name, &timezone),
            errors,
            saved: false,
            confirm_sent: false,
            stopped: stopped(&state, &who).await?,
            courses: course_views(&state, &who, detail.as_ref()),
        };
        return Ok(view.render(&state, StatusCode::UNPROCESSABLE_ENTITY, &token));
    }
    // After a bounce or a complaint stopped mail, an offering chosen again waits for a new
    // confirmation from the inbox: the address may be gone, or someone else's now.
    let confirmed = confirmed_offerings(detail.as_ref());
    let stopped = stopped(&state, &who).await?.is_some();
    let (ids, again): (Vec<&Offering>, Vec<&Offering>) = choices
        .iter()
        .filter(|(_, on)| *on)
        .map(|(o, _)| o)
        .partition(|o| !stopped || confirmed.contains(&o.slug.as_str()));
    let ids: Vec<i64> = ids.iter().map(|o| o.id).collect();
    let now = state.clock().now_ms();
    state
        .store()
        .update_preferences(
            who.id,
            parsed_name.as_ref(),
            parsed_zone.as_ref(),
            &ids,
            &client.clone().consent(String::new(), ConsentSource::Email),
            now,
        )
        .await?;
    if again.is_empty() {
        return Ok(Redirect::to(&format!("/preferences/{token}?saved=1")).into_response());
    }
    let config = state.config();
    let signup = NewSignup {
        mailbox_key: state.links().mailbox_key(&who.email),
        email: who.email.clone(),
        name: parsed_name,
        timezone: parsed_zone,
        offerings: again.into_iter().cloned().collect(),
        consent: client.consent(state.consent_hash().to_owned(), ConsentSource::Email),
        cooldown_ms: i64::from(config.signup.confirmation_cooldown_minutes) * 60_000,
        domain_cap_per_hour: Some(config.signup.confirmations_per_domain_per_hour)
            .filter(|cap| *cap > 0),
    };
    state.signups().record(signup).await?;
    Ok(Redirect::to(&format!("/preferences/{token}?saved=confirm")).into_response())
}

async fn download(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let who = subscriber(&state, &token).await?;
    let detail = state
        .store()
        .subscriber_data(who.id)
        .await?
        .ok_or(ErrorKind::InvalidLink)?;
    let body = serde_json::to_string_pretty(&detail).unwrap_or_default();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"my-data.json\"",
            ),
        ],
        body,
    )
        .into_response())
}

async fn erase(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let who = subscriber(&state, &token).await?;
    let confirmed = form_urlencoded::parse(&body).any(|(k, v)| k == "confirm" && v == "yes");
    if !confirmed {
        let message = "To erase your data, tick the box that says you want it erased.";
        return View::refused(&state, &token, &who, message).await;
    }
    let hash = state.links().email_hash(&who.email);
    state
        .store()
        .erase_subscriber(who.id, &hash, state.clock().now_ms())
        .await?;
    tracing::info!(subscriber = who.id, "subscriber erased");
    Ok(pages::render(
        &state,
        StatusCode::OK,
        "erased",
        "Erased",
        json!({}),
    ))
}
