//! The website: signup, confirmation, unsubscribe, preferences, and the plumbing they share.
//!
//! Each page group owns its routes; [`router`] puts them together with the layers every
//! request passes: a 64 KiB body limit, CORS for the JSON API, and request tracing that names
//! routes by their pattern, so tokens in paths never reach the log.

mod client;
mod confirm;
mod error;
mod pages;
mod preferences;
mod subscribe;
mod unsubscribe;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

pub use client::{ClientInfo, RateLimiter};
pub use error::AppError;

use crate::clock::Clock;
use crate::config::Config;
use crate::links::Links;
use crate::mail::Templates;
use crate::store::Store;

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
    templates: Arc<Templates>,
    links: Links,
    clock: Clock,
    /// Notified when a request queued a delivery, so an idle worker starts at once.
    wake: Arc<Notify>,
    limiter: Option<RateLimiter>,
    /// Hex SHA-256 of the consent text on the signup page.
    consent_hash: String,
}

impl AppState {
    pub fn new(
        config: Config,
        store: Store,
        templates: Arc<Templates>,
        links: Links,
        clock: Clock,
        wake: Arc<Notify>,
    ) -> Self {
        let limiter = RateLimiter::new(
            config.signup.rate_limit_per_minute,
            config.signup.rate_limit_burst,
        );
        let consent_hash = hex_digest(&Sha256::digest(config.signup.consent_text.as_bytes()));
        Self {
            inner: Arc::new(StateInner {
                config,
                store,
                templates,
                links,
                clock,
                wake,
                limiter,
                consent_hash,
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }
    pub fn links(&self) -> &Links {
        &self.inner.links
    }
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }
    pub fn wake_workers(&self) {
        self.inner.wake.notify_waiters();
        self.inner.wake.notify_one();
    }
    pub fn limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }
    pub fn consent_hash(&self) -> &str {
        &self.inner.consent_hash
    }
}

/// Lowercase hex of a digest.
pub fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        tracing::info_span!("request", method = %request.method(), route = %route)
    });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/subscribe") }),
        )
        .merge(subscribe::routes())
        .merge(confirm::routes())
        .merge(unsubscribe::routes())
        .merge(preferences::routes())
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors)
        .layer(trace)
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
}
