//! A delivery worker: a loop around [`Worker::step`], which claims a batch of due deliveries,
//! renders and sends them with bounded concurrency, and records each result. All state lives in
//! the database, so any number of workers (in `serve` or in `sangha worker` processes) can run,
//! and a crash only leaves leases that run out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};

use crate::clock::{Clock, Millis};
use crate::config::WorkerConfig;
use crate::domain::{DeliveryKind, DeliveryStatus, EmailAddress, SubscriptionStatus};
use crate::mail::{CompiledSend, Composer, SendErrorKind, Transport};
use crate::store::{ClaimedDelivery, Offering, Store, SuppressionReason};

/// A send's compiled templates and its offering.
type SendParts = (Arc<CompiledSend>, Arc<Offering>);

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    pub claimed: usize,
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl StepOutcome {
    pub fn is_idle(&self) -> bool {
        self.claimed == 0
    }
}

enum Result1 {
    /// Handed over; recorded for the whole batch at once (id, the server's reply).
    Sent(i64, String),
    Retried,
    Failed,
    Skipped,
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    composer: Composer,
    transport: Transport,
    clock: Clock,
    settings: WorkerConfig,
    id: String,
    claims: AtomicU64,
    sends: Mutex<HashMap<i64, SendParts>>,
}

/// Delay before the next attempt after `attempts` failed ones: 30 s doubling up to an hour,
/// with up to a fifth of random jitter so retries of many rows do not arrive together.
pub fn backoff_ms(attempts: i64) -> Millis {
    let exp = attempts.clamp(1, 20) - 1;
    let base: Millis = (30_000i64 << exp).min(3_600_000);
    let jitter = rand::random_range(0..=base / 5);
    base + jitter
}

impl Worker {
    pub fn new(
        store: Store,
        composer: Composer,
        transport: Transport,
        clock: Clock,
        settings: WorkerConfig,
    ) -> Self {
        let id = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            inner: Arc::new(Inner {
                store,
                composer,
                transport,
                clock,
                settings,
                id,
                claims: AtomicU64::new(0),
                sends: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Claims one batch and delivers it. Returns how the batch went; an empty claim is idle.
    pub async fn step(&self) -> anyhow::Result<StepOutcome> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let lease_id = format!(
            "{}-{}",
            inner.id,
            inner.claims.fetch_add(1, Ordering::Relaxed)
        );
        let lease_until = now + (inner.settings.lease_seconds as i64) * 1000;
        let batch = inner
            .store
            .claim_deliveries(&lease_id, now, lease_until, inner.settings.batch_size)
            .await?;
        let mut outcome = StepOutcome {
            claimed: batch.len(),
            ..StepOutcome::default()
        };
        // Each delivery is a task of its own, so rendering (most of the CPU a message costs)
        // spreads over every core instead of running inside this one task.
        let lease = Arc::<str>::from(lease_id.as_str());
        let results: Vec<(Result1, Option<i64>)> = futures::stream::iter(batch)
            .map(|d| {
                let worker = self.clone();
                let lease = lease.clone();
                tokio::spawn(async move {
                    let send_id = d.send_id;
                    (worker.deliver(d, &lease).await, send_id)
                })
            })
            .buffer_unordered(inner.settings.concurrency as usize)
            .filter_map(|joined| async move {
                joined
                    .inspect_err(|e| tracing::error!(error = %e, "a delivery task failed"))
                    .ok()
            })
            .collect()
            .await;
        let mut failing_sends = Vec::new();
        let mut sent = Vec::new();
        for (r, send_id) in results {
            match r {
                Result1::Sent(id, reply) => {
                    outcome.sent += 1;
                    sent.push((id, reply));
                }
                Result1::Retried => outcome.retried += 1,
                Result1::Skipped => outcome.skipped += 1,
                Result1::Failed => {
                    outcome.failed += 1;
                    if let Some(id) = send_id
                        && !failing_sends.contains(&id)
                    {
                        failing_sends.push(id);
                    }
                }
            }
        }
        // One statement records the whole batch's hand-offs: a round trip and a commit per
        // message was the bottleneck on PostgreSQL. Should it fail, the rows stay leased and
        // are sent again once the lease runs out (counted as interrupted, same Message-IDs).
        if !sent.is_empty() {
            let now = inner.clock.now_ms();
            if let Err(e) = inner
                .store
                .mark_deliveries_sent(&lease_id, now, &sent)
                .await
            {
                tracing::error!(error = %e, count = sent.len(),
                    "sent, but could not record it; these messages may be sent twice");
            }
        }
        for id in failing_sends {
            inner
                .store
                .pause_send_if_failing(
                    id,
                    inner.settings.pause_after_failures,
                    inner.settings.pause_failure_percent,
                )
                .await?;
        }
        Ok(outcome)
    }

    async fn deliver(&self, delivery: ClaimedDelivery, lease_id: &str) -> Result1 {
        let inner = &self.inner;
        if delivery.interrupted > 0 {
            // An earlier holder died between claiming and recording: it may or may not have
            // handed the message over. Sending again risks a duplicate (same Message-ID, so
            // mail clients can fold it); not sending risks a loss, which is worse.
            tracing::warn!(
                delivery = delivery.id,
                message_id = %delivery.message_id,
                interrupted = delivery.interrupted,
                "ambiguous: an earlier attempt was interrupted; sending again"
            );
        }
        let late = inner.clock.now_ms() - delivery.due_at;
        if delivery.local_time_send
            && delivery.attempts == 1
            && late > i64::from(inner.settings.grace_minutes) * 60_000
        {
            self.finish(
                &delivery,
                lease_id,
                DeliveryStatus::Skipped,
                "missed: fell due while the service was down, beyond the grace window",
            )
            .await;
            return Result1::Skipped;
        }
        let message = match self.compose(&delivery).await {
            Ok(Some(message)) => message,
            Ok(None) => {
                self.finish(
                    &delivery,
                    lease_id,
                    DeliveryStatus::Skipped,
                    "not subscribed any more",
                )
                .await;
                return Result1::Skipped;
            }
            Err(e) => {
                tracing::error!(delivery = delivery.id, error = %e, "cannot render delivery");
                self.finish(&delivery, lease_id, DeliveryStatus::Failed, &e.to_string())
                    .await;
                return Result1::Failed;
            }
        };
        match inner.transport.send(message).await {
            Ok(reply) => {
                tracing::debug!(delivery = delivery.id, "sent");
                Result1::Sent(delivery.id, reply)
            }
            Err(e) => {
                let give_up = delivery.attempts >= i64::from(inner.settings.max_attempts);
                match e.kind {
                    SendErrorKind::Transient if !give_up => {
                        let next = inner.clock.now_ms() + backoff_ms(delivery.attempts);
                        tracing::warn!(delivery = delivery.id, attempts = delivery.attempts,
                            error = %e.message, "transient failure, will retry");
                        if let Err(db) = inner
                            .store
                            .mark_delivery_retry(delivery.id, lease_id, next, &e.message)
                            .await
                        {
                            tracing::error!(delivery = delivery.id, error = %db, "cannot record retry");
                        }
                        Result1::Retried
                    }
                    SendErrorKind::BadRecipient => {
                        tracing::warn!(delivery = delivery.id, error = %e.message,
                            "recipient does not exist; suppressing the address");
                        self.finish(&delivery, lease_id, DeliveryStatus::Suppressed, &e.message)
                            .await;
                        self.suppress(&delivery).await;
                        Result1::Failed
                    }
                    _ => {
                        tracing::warn!(delivery = delivery.id, error = %e.message, "delivery failed");
                        self.finish(&delivery, lease_id, DeliveryStatus::Failed, &e.message)
                            .await;
                        Result1::Failed
                    }
                }
            }
        }
    }

    /// Stops mailing an address the server said does not exist (RFC 3463 5.1.x).
    async fn suppress(&self, delivery: &ClaimedDelivery) {
        let Ok(email) = EmailAddress::parse(&delivery.email) else {
            return;
        };
        let hash = self.inner.composer.links().email_hash(&email);
        let now = self.inner.clock.now_ms();
        if let Err(e) = self
            .inner
            .store
            .suppress_subscriber(
                delivery.subscriber_id,
                &hash,
                SuppressionReason::Bounced,
                now,
            )
            .await
        {
            tracing::error!(delivery = delivery.id, error = %e, "cannot suppress the address");
        }
    }

    async fn finish(
        &self,
        delivery: &ClaimedDelivery,
        lease_id: &str,
        status: DeliveryStatus,
        why: &str,
    ) {
        let now = self.inner.clock.now_ms();
        if let Err(e) = self
            .inner
            .store
            .mark_delivery_final(delivery.id, lease_id, status, now, why)
            .await
        {
            tracing::error!(delivery = delivery.id, error = %e, "cannot record delivery result");
        }
    }

    async fn compose(&self, delivery: &ClaimedDelivery) -> anyhow::Result<Option<lettre::Message>> {
        match delivery.kind {
            DeliveryKind::Send => {
                let (Some(send_id), Some(offering_id)) = (delivery.send_id, delivery.offering_id)
                else {
                    return Ok(None);
                };
                // A person who left (or was suppressed) after the fan-out is skipped now.
                if delivery.subscription_status != Some(SubscriptionStatus::Confirmed) {
                    return Ok(None);
                }
                let (send, offering) = self.send_parts(send_id, offering_id).await?;
                Ok(Some(
                    self.inner.composer.send_email(delivery, &send, &offering)?,
                ))
            }
            DeliveryKind::Confirmation => {
                let Some(signup) = self.inner.store.confirmation_email(delivery).await? else {
                    return Ok(None);
                };
                Ok(Some(self.inner.composer.confirmation(delivery, &signup)?))
            }
        }
    }

    /// The compiled templates and offering of a send, cached for the life of the worker.
    async fn send_parts(&self, send_id: i64, offering_id: i64) -> anyhow::Result<SendParts> {
        if let Some(hit) = self.inner.sends.lock().expect("cache lock").get(&send_id) {
            return Ok(hit.clone());
        }
        let content = self
            .inner
            .store
            .send_content(send_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("send {send_id} is gone"))?;
        let offering = self
            .inner
            .store
            .offering_by_id(offering_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("offering {offering_id} is gone"))?;
        let parts = (Arc::new(CompiledSend::new(&content)?), Arc::new(offering));
        self.inner
            .sends
            .lock()
            .expect("cache lock")
            .insert(send_id, parts.clone());
        Ok(parts)
    }

    /// Runs steps until `shutdown` turns true. Sleeps `poll_interval_ms` when idle, or until
    /// `wake` is notified (a signup in the same process just queued a delivery).
    ///
    /// [`LANES`] loops run side by side, each claiming, delivering and recording its own
    /// batches: while one waits on the database (a claim, the record of a batch) or on the last
    /// slow messages of its batch, the others keep the SMTP sessions busy. The SMTP pool still
    /// bounds the sessions, and each lane at most `worker.concurrency` messages.
    pub async fn run(self, shutdown: watch::Receiver<bool>, wake: Arc<Notify>) {
        tracing::info!(worker = %self.inner.id, "delivery worker started");
        let lanes: Vec<_> = (0..LANES)
            .map(|_| tokio::spawn(self.clone().lane(shutdown.clone(), wake.clone())))
            .collect();
        for lane in lanes {
            let _ = lane.await;
        }
        // Say goodbye (QUIT) on idle SMTP sessions rather than dropping them.
        self.inner.transport.close().await;
        tracing::info!(worker = %self.inner.id, "delivery worker stopped");
    }

    async fn lane(self, mut shutdown: watch::Receiver<bool>, wake: Arc<Notify>) {
        let idle = Duration::from_millis(self.inner.settings.poll_interval_ms);
        while !*shutdown.borrow() {
            let pause = match self.step().await {
                Ok(outcome) if !outcome.is_idle() => continue,
                Ok(_) => idle,
                Err(e) => {
                    tracing::error!(error = %e, "delivery step failed; retrying");
                    idle.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.notified() => {}
                changed = shutdown.changed() => {
                    // The sender is gone: nobody can ask us to stop any more, so stop now.
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Batches a worker has in flight at once (see [`Worker::run`]). On PostgreSQL, where a claim
/// and the record of a batch of 200 took 12 and 20 ms, one lane left the SMTP sessions idle
/// while it waited: 2,700-2,900 msg/s with one, 2,900-3,900 with two, 3,600-3,900 with four
/// (20k recipients). SQLite was the same with two or four.
pub const LANES: usize = 4;

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sangha".to_owned())
}
