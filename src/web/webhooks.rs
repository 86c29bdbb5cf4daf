//! The email providers' event webhooks: `POST /webhooks/ses` (Amazon SNS messages, RSA signed
//! with a certificate fetched from Amazon SNS), `/webhooks/postmark` (basic auth),
//! `/webhooks/mailgun` (HMAC signature, timestamp and token) and `/webhooks/sendgrid` (ECDSA
//! signature). Each answers 404 until its `[webhooks.*]` section is configured, 401 to a request
//! not shown to come from the provider, 400 to a body it cannot read, 413 past
//! [`WEBHOOK_MAX_BODY_BYTES`]; and records each bounce or complaint through the
//! [`Recorder`](crate::bounces::Recorder), once however often it comes (a repeat answers 200 and
//! changes nothing).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::sns::{CertificateError, FetchError};
use super::{AppError, AppState, ErrorKind};
use crate::bounces::{self, Incoming, Recorder, Refused, SnsKind, SnsMessage};

/// Largest webhook body accepted (SendGrid batches events); larger ones get 413.
pub const WEBHOOK_MAX_BODY_BYTES: usize = 256 * 1024;

/// Webhook requests handled at once. One more gets 429 with `Retry-After` before its body is
/// read: every provider sends again later, and a flood of events cannot take the database and
/// the CPUs from signups (BENCHMARKS.md, "A flood of webhooks beside signups").
pub const WEBHOOK_CONCURRENCY: usize = 2;

/// What a webhook request refused for want of a permit is told to wait, in seconds.
const WEBHOOK_RETRY_AFTER_SECS: u64 = 5;

/// The webhook routes, with their own body limit and concurrency limit.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/webhooks/ses", post(ses))
        .route("/webhooks/postmark", post(postmark))
        .route("/webhooks/mailgun", post(mailgun))
        .route("/webhooks/sendgrid", post(sendgrid))
        .layer(DefaultBodyLimit::max(WEBHOOK_MAX_BODY_BYTES))
        .layer(middleware::from_fn(|request: Request, next: Next| {
            super::refuse_bodies_over(WEBHOOK_MAX_BODY_BYTES, request, next)
        }))
        .layer(middleware::from_fn_with_state(state, one_of_few))
}

/// Runs the request while it holds one of the [`WEBHOOK_CONCURRENCY`] permits; 429 when none
/// is free.
async fn one_of_few(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.webhook_permits().clone().try_acquire_owned() else {
        tracing::debug!("webhook refused: {WEBHOOK_CONCURRENCY} already running");
        return AppError::from(ErrorKind::TooManyRequests {
            retry_after_secs: WEBHOOK_RETRY_AFTER_SECS,
        })
        .in_json()
        .into_response();
    };
    next.run(request).await
}

/// The header SNS names the message's type in (the body's `Type` says the same, signed).
const SNS_MESSAGE_TYPE: &str = "x-amz-sns-message-type";

/// `POST /webhooks/ses`: one Amazon SNS message, its signature checked with the certificate
/// at its `SigningCertURL` (an Amazon SNS host, checked before anything is fetched): a
/// notification's SES bounce or complaint is recorded; a subscription to the configured topic
/// is confirmed.
async fn ses(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let config = state
        .config()
        .webhooks
        .ses
        .as_ref()
        .ok_or_else(not_configured)?;
    let message = SnsMessage::parse(&body).map_err(refused)?;
    if let Some(kind) = headers.get(SNS_MESSAGE_TYPE)
        && kind.as_bytes() != message.kind.as_str().as_bytes()
    {
        return Err(refused(Refused::Malformed(format!(
            "{SNS_MESSAGE_TYPE} says another type than the message ({})",
            message.kind.as_str()
        ))));
    }
    if let Some(topic) = &config.topic_arn
        && *topic != message.topic_arn
    {
        return Err(refused(Refused::Unauthorized(
            "not the configured SNS topic",
        )));
    }
    let key = state
        .sns()
        .key(&message.signing_cert_url)
        .await
        .map_err(|e| match e {
            CertificateError::Fetch(e) => fetch_failed(e),
            CertificateError::Unreadable(_) => {
                refused(Refused::Unauthorized("no usable signing certificate"))
            }
        })?;
    message.verify(&key).map_err(refused)?;
    match message.kind {
        SnsKind::Notification => {
            let report = bounces::ses_event(&message).map_err(refused)?;
            record(&state, report.as_slice()).await
        }
        SnsKind::SubscriptionConfirmation => {
            if config.topic_arn.is_none() {
                tracing::warn!(topic = %message.topic_arn,
                    "confirming an SNS subscription to any topic: set webhooks.ses.topic_arn");
            }
            let url = message
                .subscribe_url
                .as_ref()
                .expect("a confirmation has its SubscribeURL");
            state.sns().confirm(url).await.map_err(fetch_failed)?;
            tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
            Ok(Json(json!({ "subscribed": message.topic_arn })))
        }
        SnsKind::UnsubscribeConfirmation => {
            tracing::warn!(topic = %message.topic_arn,
                "SNS says this endpoint was unsubscribed from the topic");
            Ok(Json(json!({ "unsubscribed": message.topic_arn })))
        }
    }
}

/// A fetch from Amazon SNS that failed: a URL SNS does not know is refused (401); SNS out of
/// reach is our failure (500), so SNS delivers the message again later.
fn fetch_failed(e: FetchError) -> AppError {
    match e {
        FetchError::Status(_) => refused(Refused::Unauthorized("Amazon SNS does not know the URL")),
        FetchError::Unreachable(_) => {
            AppError::from(anyhow::Error::new(e).context("SES webhook")).in_json()
        }
    }
}

/// `POST /webhooks/postmark`: one bounce or spam complaint record.
async fn postmark(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let config = state
        .config()
        .webhooks
        .postmark
        .as_ref()
        .ok_or_else(not_configured)?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !bounces::postmark_authorized(authorization, &config.username, config.password.expose()) {
        return Err(refused(Refused::Unauthorized(
            "wrong or missing credentials",
        )));
    }
    let report = bounces::postmark_event(&body).map_err(refused)?;
    record(&state, report.as_slice()).await
}

/// `POST /webhooks/mailgun`: one signed event.
async fn mailgun(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, AppError> {
    let config = state
        .config()
        .webhooks
        .mailgun
        .as_ref()
        .ok_or_else(not_configured)?;
    let report = bounces::mailgun_event(
        &body,
        config.signing_key.expose(),
        state.clock().now_ms(),
        state.mailgun_tokens(),
    )
    .map_err(refused)?;
    record(&state, report.as_slice()).await
}

/// The header SendGrid puts its signature in (base64 of a DER ECDSA signature).
const SENDGRID_SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
/// The header SendGrid puts the signed timestamp in.
const SENDGRID_TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

/// `POST /webhooks/sendgrid`: a signed batch of events.
async fn sendgrid(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let config = state
        .config()
        .webhooks
        .sendgrid
        .as_ref()
        .ok_or_else(not_configured)?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let reports = bounces::sendgrid_events(
        &body,
        header(SENDGRID_SIGNATURE),
        header(SENDGRID_TIMESTAMP),
        config.public_key.verifying_key(),
    )
    .map_err(refused)?;
    record(&state, &reports).await
}

/// Records the reports; answers how many notices were new.
async fn record(state: &AppState, reports: &[Incoming]) -> Result<Json<Value>, AppError> {
    let recorder = Recorder::new(
        state.store().clone(),
        state.links().clone(),
        state.clock().clone(),
        state.config(),
    );
    let mut recorded = 0;
    for report in reports {
        recorded += recorder
            .record(report)
            .await
            .map_err(|e| AppError::from(e).in_json())?
            .iter()
            .filter(|r| r.id.is_some())
            .count();
    }
    Ok(Json(json!({ "recorded": recorded })))
}

fn not_configured() -> AppError {
    AppError::from(ErrorKind::NotFound).in_json()
}

fn refused(refused: Refused) -> AppError {
    tracing::debug!(reason = %refused, "webhook refused");
    match refused {
        Refused::Unauthorized(why) => ErrorKind::Unauthorized(why.to_owned()).into(),
        Refused::Malformed(why) => AppError::bad_request(format!("unreadable event: {why}")),
    }
    .in_json()
}
