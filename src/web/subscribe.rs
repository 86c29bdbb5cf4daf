//! `GET /subscribe` (the signup page) and `POST /subscribe` (form or JSON).
//!
//! A signup is parsed once into domain types; a form with mistakes is shown again with each
//! message beside its field (422), JSON gets 422 with field errors. Success is the same answer
//! whether the address was new, pending or long confirmed, so the endpoint reveals nothing.

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
use super::{AppError, AppState, pages};
use crate::domain::{EmailAddress, SubscriberName, Timezone};
use crate::store::{ConsentMeta, NewSignup, Offering};

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

async fn signup_page(State(state): State<AppState>) -> Response {
    match public_offerings(&state).await {
        Ok(offerings) => form_page(
            &state,
            StatusCode::OK,
            &offerings,
            &RawSignup::default(),
            &FieldErrors::new(),
        ),
        Err(e) => pages::error_page(&state, e),
    }
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
) -> Response {
    let started = std::time::Instant::now();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = if content_type.starts_with("application/json") {
        Format::Json
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Format::Form
    } else {
        return AppError::UnsupportedMediaType(
            "Send the signup as application/x-www-form-urlencoded or application/json.".into(),
        )
        .into_json_response();
    };
    let fail = |error: AppError| match format {
        Format::Json => error.into_json_response(),
        Format::Form => pages::error_page(&state, error),
    };

    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = "The request is too large (the limit is 64 KiB).";
            let response = match format {
                Format::Json => Json(json!({ "error": message })).into_response(),
                Format::Form => pages::message(&state, StatusCode::OK, "Too large", message),
            };
            return (StatusCode::PAYLOAD_TOO_LARGE, response).into_response();
        }
        Err(rejection) => return fail(AppError::BadRequest(rejection.body_text())),
    };

    if let (Some(limiter), Some(ip)) = (state.limiter(), client.ip)
        && let Err(retry_after_secs) = limiter.check(ip)
    {
        tracing::info!(%ip, "signup rate limit reached");
        return fail(AppError::TooManyRequests { retry_after_secs });
    }

    let honeypot_field = state.config().signup.honeypot_field.as_str();
    let raw = match format {
        Format::Form => parse_form(&body, honeypot_field),
        Format::Json => match parse_json(&body, honeypot_field) {
            Ok(raw) => raw,
            Err(Reject::BadRequest(message)) => return fail(AppError::BadRequest(message)),
            Err(Reject::Fields(errors)) => return field_errors_json(&errors),
        },
    };

    if !raw.honeypot.trim().is_empty() {
        // A bot filled the field people cannot see: it gets the success answer and nothing
        // else happens.
        tracing::info!("honeypot filled; signup ignored");
        let wait = state.answer_pace().wait_for(false, started.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        return success(format);
    }

    let offerings = match public_offerings(&state).await {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let signup = match validate(&raw, &offerings) {
        Ok(valid) => valid,
        Err(errors) => {
            return match format {
                Format::Json => field_errors_json(&errors),
                Format::Form => form_page(
                    &state,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &offerings,
                    &raw,
                    &errors,
                ),
            };
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
        return fail(AppError::TooManyRequests { retry_after_secs });
    }

    let config = state.config();
    let mailbox_key = state.links().mailbox_key(&signup.email);
    let new = NewSignup {
        mailbox_key,
        email: signup.email,
        name: signup.name,
        timezone: signup.timezone,
        offerings: signup.offerings,
        consent: ConsentMeta {
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent,
            text_hash: state.consent_hash().to_owned(),
            source: match format {
                Format::Form => "form",
                Format::Json => "api",
            },
        },
        cooldown_ms: i64::from(config.signup.confirmation_cooldown_minutes) * 60_000,
        domain_cap_per_hour: Some(config.signup.confirmations_per_domain_per_hour)
            .filter(|cap| *cap > 0),
    };
    match state.signups().record(new).await {
        Ok(outcome) => {
            tracing::debug!(
                subscriber = outcome.subscriber_id,
                queued = outcome.confirmation_queued,
                "signup recorded"
            );
            // As late as an answer that queued an email, so the time tells nothing.
            let wait = state
                .answer_pace()
                .wait_for(outcome.confirmation_queued, started.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            success(format)
        }
        Err(e) => fail(e.into()),
    }
}

fn success(format: Format) -> Response {
    match format {
        Format::Form => Redirect::to("/subscribe/check-inbox").into_response(),
        Format::Json => (
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
        .map_err(|e| errors.insert("email", e))
        .ok();
    let name = SubscriberName::parse(&raw.name)
        .map_err(|e| errors.insert("name", e))
        .ok()
        .flatten();
    let timezone = if raw.timezone.trim().is_empty() {
        None
    } else {
        Timezone::parse(&raw.timezone)
            .map_err(|e| errors.insert("timezone", e))
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
