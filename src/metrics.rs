//! Prometheus metrics: the counters the web and the delivery workers update where they learn an
//! outcome, the gauges read from the database at each scrape, and the `GET /metrics` router
//! that `app` serves on `[metrics] bind`, an address of its own, never the site's.
//!
//! Each [`Metrics`] has its own registry (prometheus-client, no global recorder), so two apps
//! in one process (the tests) count apart. [`Metrics::off`] counts nothing.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::clock::Clock;
use crate::domain::DeliveryKind;
use crate::store::Store;

/// What became of one delivery attempt (label `outcome` of `sangha_deliveries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Handed to the relay (or written to the outbox folder).
    Sent,
    /// A transient failure: tried again later.
    Retried,
    /// A permanent failure, or the last attempt.
    Failed,
    /// The relay said the address does not exist; the address is suppressed.
    Suppressed,
    /// Not sent: the person left, or a local-time send fell beyond its grace window.
    Skipped,
    /// Given back untried while the relay refuses our credentials.
    Held,
}

impl DeliveryOutcome {
    const ALL: [Self; 6] = [
        Self::Sent,
        Self::Retried,
        Self::Failed,
        Self::Suppressed,
        Self::Skipped,
        Self::Held,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
            Self::Skipped => "skipped",
            Self::Held => "held",
        }
    }
}

/// The class of an SMTP server's answer to one message (RFC 5321 §4.2.1), or no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    Positive,
    Transient,
    Permanent,
    /// No reply: the connection, TLS, a timeout or a lost session.
    ConnectionError,
}

impl ReplyClass {
    const ALL: [Self; 4] = [
        Self::Positive,
        Self::Transient,
        Self::Permanent,
        Self::ConnectionError,
    ];

    /// The class of a reply code (`250` → 2xx); `None`: no reply came.
    pub fn of(code: Option<u16>) -> Self {
        match code {
            Some(200..=399) => Self::Positive,
            Some(400..=499) => Self::Transient,
            Some(_) => Self::Permanent,
            None => Self::ConnectionError,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "2xx",
            Self::Transient => "4xx",
            Self::Permanent => "5xx",
            Self::ConnectionError => "connection_error",
        }
    }
}

/// How a `POST /subscribe` ended (label `outcome` of `sangha_signups_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    /// Recorded (a confirmation email queued, or held back by the cooldown).
    Accepted,
    /// An unreadable body, a bad address, an unknown offering.
    Invalid,
    /// Too many signups from one client.
    RateLimited,
    /// Too many signups for one email domain from one network.
    DomainLimited,
    /// The field people cannot see was filled: a bot, answered as a success.
    Honeypot,
    /// The server failed (the database did not answer): a 5xx.
    Error,
}

impl SignupOutcome {
    const ALL: [Self; 6] = [
        Self::Accepted,
        Self::Invalid,
        Self::RateLimited,
        Self::DomainLimited,
        Self::Honeypot,
        Self::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Invalid => "invalid",
            Self::RateLimited => "rate_limited",
            Self::DomainLimited => "domain_limited",
            Self::Honeypot => "honeypot",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    /// The route's pattern (`/confirm/{token}`), never the path: tokens are in paths.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    send_id: i64,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

type HttpHistograms = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// Buckets of request latency in seconds: 1 ms to about 16 s.
fn http_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// The counters and gauges of one running application; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    smtp_replies: Family<ClassLabels, Counter>,
    signups: Family<OutcomeLabels, Counter>,
    confirmations: Counter,
    unsubscribes: Counter,
    http: HttpHistograms,
    queue_due: Gauge,
    queue_oldest_age: Gauge<f64, AtomicU64>,
    sends: Family<SendLabels, Gauge>,
    pool: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
}

impl Metrics {
    /// Metrics that count nothing: no endpoint is configured.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Metrics that count, in a fresh registry with every metric at zero.
    pub fn on() -> Self {
        let mut registry = Registry::with_prefix("sangha");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by kind (confirmation, send) and outcome (sent, retried, failed, \
             suppressed, skipped, held)",
            deliveries.clone(),
        );
        let smtp_replies = Family::<ClassLabels, Counter>::default();
        registry.register(
            "smtp_replies",
            "SMTP servers' answers to messages by class (2xx, 4xx, 5xx, connection_error)",
            smtp_replies.clone(),
        );
        let signups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "signups",
            "Signup requests by outcome (accepted, invalid, rate_limited, domain_limited, \
             honeypot, error)",
            signups.clone(),
        );
        let confirmations = Counter::default();
        registry.register(
            "confirmations",
            "Confirmations posted from the link in the confirmation email (posting one link again counts again)",
            confirmations.clone(),
        );
        let unsubscribes = Counter::default();
        registry.register(
            "unsubscribes",
            "Subscriptions left through an unsubscribe link (one-click or the page)",
            unsubscribes.clone(),
        );
        let http = HttpHistograms::new_with_constructor(http_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests by method, route pattern and status, and how long they took",
            Unit::Seconds,
            http.clone(),
        );
        let queue_due = Gauge::default();
        registry.register(
            "queue_due_deliveries",
            "Deliveries due now and not yet sent (sends paused or scheduled not counted)",
            queue_due.clone(),
        );
        let queue_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "queue_oldest_due_age",
            "How long the longest-waiting due delivery has been due (0 when none is)",
            Unit::Seconds,
            queue_oldest_age.clone(),
        );
        let sends = Family::<SendLabels, Gauge>::default();
        registry.register(
            "send_deliveries",
            "Deliveries of each send that is not done (sending or paused) by state (planned, \
             sent, failed)",
            sends.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections by state (idle, in_use)",
            pool.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Connections the database pool may open (database.max_connections)",
            pool_max.clone(),
        );
        let metrics = Self {
            inner: Some(Arc::new(Inner {
                registry,
                deliveries,
                smtp_replies,
                signups,
                confirmations,
                unsubscribes,
                http,
                queue_due,
                queue_oldest_age,
                sends,
                pool,
                pool_max,
            })),
        };
        metrics.start_at_zero();
        metrics
    }

    /// Every series of the closed label sets, at 0 from the start: a rate over a series that
    /// appears only at its first event misses that event, and an alert on it sees nothing.
    fn start_at_zero(&self) {
        let Some(inner) = &self.inner else { return };
        for kind in [DeliveryKind::Confirmation, DeliveryKind::Send] {
            for outcome in DeliveryOutcome::ALL {
                inner.deliveries.get_or_create_owned(&DeliveryLabels {
                    kind: kind.as_str(),
                    outcome: outcome.as_str(),
                });
            }
        }
        for class in ReplyClass::ALL {
            inner.smtp_replies.get_or_create_owned(&ClassLabels {
                class: class.as_str(),
            });
        }
        for outcome in SignupOutcome::ALL {
            inner.signups.get_or_create_owned(&OutcomeLabels {
                outcome: outcome.as_str(),
            });
        }
    }

    /// Counts one delivery attempt.
    pub fn delivery(&self, kind: DeliveryKind, outcome: DeliveryOutcome) {
        if let Some(inner) = &self.inner {
            inner
                .deliveries
                .get_or_create(&DeliveryLabels {
                    kind: kind.as_str(),
                    outcome: outcome.as_str(),
                })
                .inc();
        }
    }

    /// Counts one answer (or its absence) of an SMTP server to a message.
    pub fn smtp_reply(&self, class: ReplyClass) {
        if let Some(inner) = &self.inner {
            inner
                .smtp_replies
                .get_or_create(&ClassLabels {
                    class: class.as_str(),
                })
                .inc();
        }
    }

    /// Counts one signup request.
    pub fn signup(&self, outcome: SignupOutcome) {
        if let Some(inner) = &self.inner {
            inner
                .signups
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .inc();
        }
    }

    /// Counts one confirmed signup.
    pub fn confirmation(&self) {
        if let Some(inner) = &self.inner {
            inner.confirmations.inc();
        }
    }

    /// Counts subscriptions left through an unsubscribe link.
    pub fn unsubscribes(&self, subscriptions: usize) {
        if let Some(inner) = &self.inner {
            inner.unsubscribes.inc_by(subscriptions as u64);
        }
    }

    /// Records one answered HTTP request; `route` is the matched pattern, or `unmatched`.
    pub fn http_request(&self, method: &Method, route: &str, status: StatusCode, took: Duration) {
        if let Some(inner) = &self.inner {
            inner
                .http
                .get_or_create(&HttpLabels {
                    method: method_label(method),
                    route: route.to_owned(),
                    status: status.as_u16(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// Reads the gauges from the database: one count over the due deliveries (on the partial
    /// index the workers claim from), one grouped count over the sends not done, and the
    /// pool's own numbers.
    pub async fn refresh(&self, store: &Store, clock: &Clock) -> Result<(), sqlx::Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let now = clock.now_ms();
        let queue = store.due_queue(now).await?;
        inner.queue_due.set(queue.due);
        let age_ms = queue.oldest_due_at.map_or(0, |at| (now - at).max(0));
        inner.queue_oldest_age.set(age_ms as f64 / 1000.0);
        let progress = store.unfinished_send_counts().await?;
        inner.sends.clear();
        for (send_id, counts) in progress {
            let failed = counts.failed + counts.suppressed;
            for (state, n) in [
                ("planned", counts.total() - counts.cancelled),
                ("sent", counts.sent),
                ("failed", failed),
            ] {
                inner
                    .sends
                    .get_or_create(&SendLabels { send_id, state })
                    .set(n);
            }
        }
        let pool = store.pool();
        let open = i64::from(pool.size());
        let idle = pool.num_idle() as i64;
        inner
            .pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        inner
            .pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set((open - idle).max(0));
        inner
            .pool_max
            .set(i64::from(pool.options().get_max_connections()));
        Ok(())
    }

    /// The exposition in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Some(inner) = &self.inner {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &inner.registry)
                .expect("writing to a String");
        }
        text
    }
}

/// The method as a label: the few the site answers, so a client cannot add label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone)]
struct Scrape {
    metrics: Metrics,
    store: Store,
    clock: Clock,
}

/// `GET /metrics`, for the metrics address only: the gauges refreshed, then the exposition.
pub fn router(metrics: Metrics, store: Store, clock: Clock) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            metrics,
            store,
            clock,
        })
}

async fn scrape(State(scrape): State<Scrape>) -> Response {
    // A database that does not answer leaves the gauges as they were; the counters still tell.
    if let Err(e) = scrape.metrics.refresh(&scrape.store, &scrape.clock).await {
        tracing::warn!(error = %e, "cannot read the queue for the metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        scrape.metrics.render(),
    )
        .into_response()
}
