//! `GET /subscribe` (the signup page) and `POST /subscribe` (form or JSON).
//!
//! A signup is parsed once into domain types; a form with mistakes is shown again with each
//! message beside its field (422), JSON gets 422 with field errors. A form post that asks for
//! `Accept: application/json` (the embeddable form's script, `sangha form`) is answered in JSON:
//! such a request needs no CORS preflight. Success is the same answer whether the address was
//! new, pending or long confirmed, so the endpoint reveals nothing.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::client::ClientInfo;
use super::error::is_json;
use super::{AppError, AppState, ErrorKind, pages};
use crate::domain::{ConsentSource, EmailAddress, SubscriberName, Timezone};
use crate::metrics::SignupOutcome;
use crate::store::{NewSignup, Offering};

/// The signup routes (form and JSON).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/subscribe", get(signup_page).post(subscribe))
        .route("/subscribe/check-inbox", get(check_inbox))
}

/// How the client talks to us, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Form,
    Json,
}

/// How we answer: a page (a redirect or the form again) or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Page,
    Json,
}

impl Answer {
    /// JSON for a JSON body, or for a form post whose `Accept` asks for JSON.
    fn for_request(format: Format, headers: &HeaderMap) -> Self {
        let accepts_json = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("application/json"));
        if format == Format::Json || accepts_json {
            Answer::Json
        } else {
            Answer::Page
        }
    }
}

/// What the client sent, as text, before any checking.
#[derive(Debug, Default)]
struct RawSignup {
    email: String,
    name: String,
    offerings: Vec<String>,
    timezone: String,
    honeypot: String,
}

type FieldErrors = BTreeMap<&'static str, String>;

async fn signup_page(State(state): State<AppState>) -> Result<Response, AppError> {
    let offerings = public_offerings(&state).await?;
    Ok(form_page(
        &state,
        StatusCode::OK,
        &offerings,
        &RawSignup::default(),
        &FieldErrors::new(),
    ))
}

async fn check_inbox(State(state): State<AppState>) -> Response {
    pages::render(
        &state,
        StatusCode::OK,
        "check_inbox",
        "Check your inbox",
        json!({}),
    )
}

async fn public_offerings(state: &AppState) -> Result<Vec<Offering>, AppError> {
    Ok(state
        .store()
        .active_offerings()
        .await?
        .into_iter()
        .filter(|o| o.public)
        .collect())
}

fn form_page(
    state: &AppState,
    status: StatusCode,
    offerings: &[Offering],
    raw: &RawSignup,
    errors: &FieldErrors,
) -> Response {
    let error = |field: &str| errors.get(field).map_or(Value::Null, |m| json!(m));
    let context = json!({
        "action": "/subscribe",
        "offerings": offerings.iter().map(|o| json!({
            "slug": o.slug,
            "name": o.name,
            "description": o.description,
            "checked": raw.offerings.contains(&o.slug),
        })).collect::<Vec<_>>(),
        // The zone is a hidden field the page's script fills in: one longer than any zone
        // name is not sent back.
        "values": {
            "email": raw.email,
            "name": raw.name,
            "timezone": if raw.timezone.len() <= Timezone::MAX_BYTES { raw.timezone.as_str() } else { "" },
        },
        "errors": {
            "email": error("email"),
            "name": error("name"),
            "offerings": error("offerings"),
            "timezone": error("timezone"),
            "form": error("form"),
        },
        "consent_text": state.config().signup.consent_text,
        "honeypot": state.config().signup.honeypot_field,
    });
    pages::render(state, status, "subscribe", "Sign up", context)
}

async fn subscribe(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let started = std::time::Instant::now();
    let format = if is_json(&headers) {
        Format::Json
    } else if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
    {
        Format::Form
    } else {
        state.metrics().signup(SignupOutcome::Invalid);
        return Err(AppError::unsupported_media_type(
            "Send the signup as application/x-www-form-urlencoded or application/json.",
        )
        .in_json());
    };
    let reply = Answer::for_request(format, &headers);
    let answer = signup(&state, client, format, reply, body, started).await;
    if let Err(e) = &answer {
        // The ones answered with a page or a 202 counted themselves.
        state.metrics().signup(match e.status() {
            StatusCode::TOO_MANY_REQUESTS => SignupOutcome::RateLimited,
            status if status.is_server_error() => SignupOutcome::Error,
            _ => SignupOutcome::Invalid,
        });
    }
    answer.map_err(|e| e.in_json_if(reply == Answer::Json))
}

/// A signup sent in `format`, answered as `reply`; its errors are answered so by [`subscribe`].
async fn signup(
    state: &AppState,
    client: ClientInfo,
    format: Format,
    reply: Answer,
    body: Result<Bytes, BytesRejection>,
    started: std::time::Instant,
) -> Result<Response, AppError> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ErrorKind::PayloadTooLarge {
                limit_kib: super::MAX_BODY_BYTES / 1024,
            }
            .into());
        }
        Err(rejection) => return Err(AppError::bad_request(rejection.body_text())),
    };

    if let (Some(limiter), Some(ip)) = (state.limiter(), client.ip)
        && let Err(retry_after_secs) = limiter.check(ip)
    {
        tracing::info!(%ip, "signup rate limit reached");
        return Err(AppError::too_many_requests(retry_after_secs));
    }

    let honeypot_field = state.config().signup.honeypot_field.as_str();
    let raw = match format {
        Format::Form => parse_form(&body, honeypot_field),
        Format::Json => match parse_json(&body, honeypot_field) {
            Ok(raw) => raw,
            Err(Reject::BadRequest(message)) => return Err(AppError::bad_request(message)),
            Err(Reject::Fields(errors)) => {
                state.metrics().signup(SignupOutcome::Invalid);
                return Ok(field_errors_json(&errors));
            }
        },
    };

    if !raw.honeypot.trim().is_empty() {
        // A bot filled the field people cannot see: it gets the success answer and nothing
        // else happens.
        tracing::info!("honeypot filled; signup ignored");
        state.metrics().signup(SignupOutcome::Honeypot);
        let wait = state.answer_pace().wait_for(false, started.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        return Ok(success(reply));
    }

    let offerings = public_offerings(state).await?;
    let signup = match validate(&raw, &offerings) {
        Ok(valid) => valid,
        Err(errors) => {
            state.metrics().signup(SignupOutcome::Invalid);
            return Ok(match reply {
                Answer::Json => field_errors_json(&errors),
                Answer::Page => form_page(
                    state,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &offerings,
                    &raw,
                    &errors,
                ),
            });
        }
    };

    if let (Some(limiter), Some(ip)) = (state.domain_limiter(), client.ip)
        && let Err(retry_after_secs) =
            limiter.check(signup.email.domain(), ip, state.clock().now_ms())
    {
        tracing::info!(
            %ip,
            domain = signup.email.domain(),
            "signup limit for this domain from this network reached"
        );
        state.metrics().signup(SignupOutcome::DomainLimited);
        return Ok(AppError::too_many_requests(retry_after_secs)
            .in_json_if(reply == Answer::Json)
            .into_response());
    }

    let config = state.config();
    let mailbox_key = state.links().mailbox_key(&signup.email);
    let source = match format {
        Format::Form => ConsentSource::Form,
        Format::Json => ConsentSource::Api,
    };
    let new = NewSignup {
        mailbox_key,
        email: signup.email,
        name: signup.name,
        timezone: signup.timezone,
        offerings: signup.offerings,
        consent: client.consent(state.consent_hash().to_owned(), source),
        cooldown_ms: i64::from(config.signup.confirmation_cooldown_minutes) * 60_000,
        domain_cap_per_hour: Some(config.signup.confirmations_per_domain_per_hour)
            .filter(|cap| *cap > 0),
    };
    let outcome = state.signups().record(new).await?;
    tracing::debug!(
        subscriber = outcome.subscriber_id,
        queued = outcome.confirmation_queued,
        "signup recorded"
    );
    state.metrics().signup(SignupOutcome::Accepted);
    // As late as an answer that queued an email, so the time tells nothing.
    let wait = state
        .answer_pace()
        .wait_for(outcome.confirmation_queued, started.elapsed());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    Ok(success(reply))
}

fn success(reply: Answer) -> Response {
    match reply {
        Answer::Page => Redirect::to("/subscribe/check-inbox").into_response(),
        Answer::Json => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "pending",
                "message": "Please check your inbox and confirm your subscription.",
            })),
        )
            .into_response(),
    }
}

fn field_errors_json(errors: &FieldErrors) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": "Some fields need attention.", "fields": errors })),
    )
        .into_response()
}

fn parse_form(body: &[u8], honeypot_field: &str) -> RawSignup {
    let mut raw = RawSignup::default();
    for (key, value) in form_urlencoded::parse(body) {
        match key.as_ref() {
            "email" => raw.email = value.into_owned(),
            "name" => raw.name = value.into_owned(),
            "offerings" | "offerings[]" => raw.offerings.push(value.into_owned()),
            "timezone" => raw.timezone = value.into_owned(),
            k if k == honeypot_field => raw.honeypot = value.into_owned(),
            _ => {}
        }
    }
    raw
}

enum Reject {
    BadRequest(String),
    Fields(FieldErrors),
}

fn parse_json(body: &[u8], honeypot_field: &str) -> Result<RawSignup, Reject> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Reject::BadRequest(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(map) = value else {
        return Err(Reject::BadRequest("The body must be a JSON object.".into()));
    };
    let mut errors = FieldErrors::new();
    let mut text = |field: &'static str| match map.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errors.insert(field, "must be a string".into());
            String::new()
        }
    };
    let mut raw = RawSignup {
        email: text("email"),
        name: text("name"),
        timezone: text("timezone"),
        ..RawSignup::default()
    };
    raw.honeypot = match map.get(honeypot_field) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    match map.get("offerings") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => raw.offerings.push(s.clone()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            raw.offerings = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
        }
        Some(_) => {
            errors.insert("offerings", "must be a list of offering slugs".into());
        }
    }
    if errors.is_empty() {
        Ok(raw)
    } else {
        Err(Reject::Fields(errors))
    }
}

/// A signup that passed every check.
struct ValidSignup {
    email: EmailAddress,
    name: Option<SubscriberName>,
    timezone: Option<Timezone>,
    offerings: Vec<Offering>,
}

fn validate(raw: &RawSignup, available: &[Offering]) -> Result<ValidSignup, FieldErrors> {
    let mut errors = FieldErrors::new();
    let email = EmailAddress::parse(&raw.email)
        .map_err(|e| errors.insert("email", e.to_string()))
        .ok();
    let name = SubscriberName::parse(&raw.name)
        .map_err(|e| errors.insert("name", e.to_string()))
        .ok()
        .flatten();
    let timezone = if raw.timezone.trim().is_empty() {
        None
    } else {
        Timezone::parse(&raw.timezone)
            .map_err(|e| errors.insert("timezone", e.to_string()))
            .ok()
    };
    let mut offerings: Vec<Offering> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for slug in &raw.offerings {
        match available.iter().find(|o| &o.slug == slug) {
            Some(o) if !offerings.iter().any(|x| x.id == o.id) => offerings.push(o.clone()),
            Some(_) => {}
            None => unknown.push(slug.chars().take(64).collect()),
        }
    }
    if !unknown.is_empty() {
        errors.insert(
            "offerings",
            format!("Unknown offering: {}.", unknown.join(", ")),
        );
    } else if offerings.is_empty() {
        errors.insert("offerings", "Please choose at least one offering.".into());
    }
    match (email, errors.is_empty()) {
        (Some(email), true) => Ok(ValidSignup {
            email,
            name,
            timezone,
            offerings,
        }),
        _ => Err(errors),
    }
}
