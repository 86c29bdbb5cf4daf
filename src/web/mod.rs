//! The website: signup, confirmation, unsubscribe, preferences, the public archive, the email
//! providers' webhooks, and the plumbing they share.
//!
//! Each page group owns its routes; [`router`] puts them together with the layers every
//! request passes: a 64 KiB body limit (the webhooks have their own), error pages rendered from
//! [`AppError`]s, CORS for the JSON API, and request tracing that names routes by their
//! pattern, so tokens in paths never reach the log.

mod answer_pace;
mod archive;
mod client;
mod confirm;
mod error;
mod favicon;
mod health;
mod pages;
mod preferences;
mod server;
mod signup_limits;
mod sns;
mod subscribe;
mod unsubscribe;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

pub use client::{ClientInfo, RateLimiter};
pub use error::{AppError, ErrorKind};
pub use server::{ConnectionTimeouts, raise_open_file_limit, serve};
pub use signup_limits::DomainSourceLimiter;
pub use sns::{FetchError, HttpsFetch, SnsFetch};
pub use webhooks::{WEBHOOK_CONCURRENCY, WEBHOOK_MAX_BODY_BYTES};

use crate::clock::Clock;
use crate::config::Config;
use crate::courses::Courses;
use crate::links::Links;
use crate::mail::Templates;
use crate::metrics::Metrics;
use crate::store::{SignupWriter, Store};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    config: Config,
    store: Store,
    /// Writes signups in groups (see [`SignupWriter`]).
    signups: SignupWriter,
    templates: Arc<Templates>,
    links: Links,
    clock: Clock,
    limiter: Option<RateLimiter>,
    domain_limiter: Option<DomainSourceLimiter>,
    answer_pace: answer_pace::AnswerPace,
    /// Hex SHA-256 of the consent text on the signup page.
    consent_hash: String,
    /// The configured courses, for pausing, resuming and describing them.
    courses: Courses,
    /// Mailgun webhook tokens accepted within the replay window.
    mailgun_tokens: crate::bounces::SeenTokens,
    /// The webhook requests that may run at once ([`webhooks::WEBHOOK_CONCURRENCY`]).
    webhook_permits: Arc<tokio::sync::Semaphore>,
    /// What the SES webhook fetches from Amazon SNS, and the certificates it keeps.
    sns: sns::Sns,
    /// Requests, signups, confirmations and unsubscribes counted for `/metrics`.
    metrics: Metrics,
}

impl AppState {
    /// The state shared by every handler; `sns_fetch` fetches from Amazon SNS for the SES
    /// webhook.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        courses: Courses,
        templates: Arc<Templates>,
        links: Links,
        clock: Clock,
        wake: Arc<Notify>,
        sns_fetch: Arc<dyn SnsFetch>,
        metrics: Metrics,
    ) -> Self {
        let limiter = RateLimiter::new(
            config.signup.rate_limit_per_minute,
            config.signup.rate_limit_burst,
        );
        let domain_limiter =
            DomainSourceLimiter::new(config.signup.signups_per_domain_per_network_per_hour);
        let consent_hash =
            crate::domain::hex(&Sha256::digest(config.signup.consent_text.as_bytes()));
        // The signup writer wakes a delivery worker when it queued confirmation emails.
        let signups = SignupWriter::spawn(store.clone(), clock.clone(), wake);
        Self {
            inner: Arc::new(StateInner {
                config,
                signups,
                store,
                templates,
                links,
                clock,
                limiter,
                domain_limiter,
                answer_pace: Default::default(),
                consent_hash,
                courses,
                mailgun_tokens: Default::default(),
                webhook_permits: Arc::new(tokio::sync::Semaphore::new(
                    webhooks::WEBHOOK_CONCURRENCY,
                )),
                sns: sns::Sns::new(sns_fetch),
                metrics,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    /// The writer that batches signups.
    pub fn signups(&self) -> &SignupWriter {
        &self.inner.signups
    }
    /// The page and email templates.
    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }
    /// The signed links.
    pub fn links(&self) -> &Links {
        &self.inner.links
    }
    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }
    /// The per-client rate limiter, when configured.
    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }
    /// The per-domain signup limiter, when configured.
    pub fn domain_limiter(&self) -> Option<&DomainSourceLimiter> {
        self.inner.domain_limiter.as_ref()
    }
    pub(crate) fn answer_pace(&self) -> &answer_pace::AnswerPace {
        &self.inner.answer_pace
    }
    /// Hex SHA-256 of the consent text shown on the signup form.
    pub fn consent_hash(&self) -> &str {
        &self.inner.consent_hash
    }
    /// The configured courses, built once from the configuration.
    pub fn courses(&self) -> &Courses {
        &self.inner.courses
    }
    pub(crate) fn mailgun_tokens(&self) -> &crate::bounces::SeenTokens {
        &self.inner.mailgun_tokens
    }
    /// The permits a webhook request holds while it runs; none left: 429.
    pub fn webhook_permits(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.webhook_permits
    }
    fn sns(&self) -> &sns::Sns {
        &self.inner.sns
    }
    /// What the site counts for `/metrics` (served on its own address, not here).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The whole application's routes and layers.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.config().server.cors_origins);
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request| {
        // The matched pattern (`/confirm/{token}`), never the raw path with its token.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "unmatched".to_owned());
        // A request id of our own on every line of the request (the client's X-Request-Id
        // is not trusted: anyone could send one that mimics another request).
        let request_id = format!("{:016x}", rand::random::<u64>());
        tracing::info_span!("request", request_id = %request_id, method = %request.method(), route = %route)
    });
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/subscribe") }),
        )
        .merge(subscribe::routes())
        .merge(confirm::routes())
        .merge(unsubscribe::routes())
        .merge(preferences::routes())
        .merge(favicon::routes())
        .merge(archive::routes())
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(refuse_oversized_bodies))
        // After the 64 KiB layers: the webhooks set their own limit.
        .merge(webhooks::routes(state.clone()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            error::render_error_pages,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .layer(trace)
        .with_state(state)
}

/// Counts the request for `/metrics` by its route's pattern (`/confirm/{token}`), never its
/// path, with the status it got and how long it took.
async fn count_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    state
        .metrics()
        .http_request(&method, route, response.status(), started.elapsed());
    response
}

/// How much of an oversized body is read and dropped before the 413 is sent, and for how long.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// 413 for a body larger than [`MAX_BODY_BYTES`]; see [`refuse_bodies_over`].
async fn refuse_oversized_bodies(request: Request, next: Next) -> Response {
    refuse_bodies_over(MAX_BODY_BYTES, request, next).await
}

/// 413 for a body larger than `limit`, before any handler runs: the confirm and
/// unsubscribe handlers act on the token alone, so the body limit (which only extractors
/// apply) would let an oversized POST confirm or unsubscribe as if it were small.
///
/// A body with a Content-Length is judged by it (hyper holds the body to that length). A body
/// without one (`Transfer-Encoding: chunked`) is read here into memory, at most `limit` of it,
/// and handed on whole, so that no handler acts before its end is known; past the limit it gets
/// the same 413.
///
/// What the client is still sending is read and dropped first (up to [`LINGER_BYTES`]): closing
/// a socket with unread data resets the connection, and the client may then lose the answer.
async fn refuse_bodies_over(limit: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {}
        Some(_) => return next.run(request).await,
        None if request.body().is_end_stream() => return next.run(request).await,
        None => {}
    }
    let json = error::is_json(request.headers());
    let (mut parts, body) = request.into_parts();
    let mut body = body.into_data_stream();
    if declared.is_none() {
        let mut buffered = Vec::new();
        loop {
            match body.next().await {
                None => {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(buffered.len()));
                    let request = Request::from_parts(parts, Body::from(buffered));
                    return next.run(request).await;
                }
                Some(Ok(chunk)) if buffered.len() + chunk.len() <= limit => {
                    buffered.extend_from_slice(&chunk);
                }
                Some(Ok(_)) => break,
                Some(Err(_)) => {
                    let error = AppError::from(ErrorKind::UnreadableBody);
                    return error.in_json_if(json).into_response();
                }
            }
        }
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut read = 0;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
    AppError::from(ErrorKind::PayloadTooLarge {
        limit_kib: limit / 1024,
    })
    .in_json_if(json)
    .into_response()
}

/// An address from its text, for unit tests.
#[cfg(test)]
fn ip(text: &str) -> std::net::IpAddr {
    text.parse().expect("an IP address")
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
}
