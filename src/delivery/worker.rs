//! A delivery worker: a loop around [`Worker::step`], which claims a batch of due deliveries,
//! renders and sends them with bounded concurrency, and records each result. All state lives in
//! the database, so any number of workers (in `serve` or in `sangha worker` processes) can run,
//! and a crash only leaves leases that run out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::for_mail;
use crate::clock::{Clock, Millis};
use crate::config::WorkerConfig;
use crate::domain::{DeliveryKind, DeliveryStatus, EmailAddress, SubscriptionStatus};
use crate::mail::{CompiledSend, Composer, RelayState, SendError, SendErrorKind, Transport};
use crate::metrics::{DeliveryOutcome, Metrics, ReplyClass};
use crate::store::{ClaimedDelivery, HandOff, Offering, Store, SuppressionReason};

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
    /// Given back untried while the relay refuses our credentials.
    pub held: usize,
}

impl StepOutcome {
    /// True when the step claimed no delivery.
    pub fn is_idle(&self) -> bool {
        self.claimed == 0
    }
}

/// What became of one delivery of a batch.
enum DeliveryResult {
    /// Handed over (id, the server's reply); recorded at once by [`Worker::record_sent`].
    Sent(i64, String),
    Retried,
    Failed,
    /// Failed, and the address suppressed: the relay said it does not exist.
    Suppressed,
    Skipped,
    /// Given back untried: the relay refuses our credentials (see [`RelayState`]).
    Held,
}

impl DeliveryResult {
    fn outcome(&self) -> DeliveryOutcome {
        match self {
            Self::Sent(..) => DeliveryOutcome::Sent,
            Self::Retried => DeliveryOutcome::Retried,
            Self::Failed => DeliveryOutcome::Failed,
            Self::Suppressed => DeliveryOutcome::Suppressed,
            Self::Skipped => DeliveryOutcome::Skipped,
            Self::Held => DeliveryOutcome::Held,
        }
    }
}

/// The class of the relay's answer to one message; `None` when the message never reached it
/// (held back, or refused before the conversation: a DKIM or envelope error, which is
/// permanent and has no reply code).
fn reply_class(sent: &Result<String, SendError>) -> Option<ReplyClass> {
    match sent {
        Ok(_) => Some(ReplyClass::Positive),
        Err(e) if e.kind == SendErrorKind::Held => None,
        Err(e) if e.reply_code.is_none() && e.kind == SendErrorKind::Permanent => None,
        Err(e) => Some(ReplyClass::of(e.reply_code)),
    }
}

/// A delivery worker: claims due deliveries in batches and hands them to the transport.
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
    /// `smtp.rate_per_second` of the transport (0: unlimited), shared by every lane.
    rate_per_second: u32,
    /// Counts each delivery's outcome and the relay's replies.
    metrics: Metrics,
    /// How long a message takes from its start to the transport's answer, waits for the rate
    /// limit and for a pooled session included: a moving average in ms, `None` before the
    /// first batch. Claims are sized by it (see [`claim_size`]).
    latency_ms: Mutex<Option<f64>>,
    id: String,
    claims: AtomicU64,
    sends: Mutex<HashMap<i64, SendParts>>,
    /// Turns true when [`Worker::run`] is asked to stop: batches start no further message.
    stopping: watch::Sender<bool>,
    /// Hand-offs the database refused to record, kept until it takes writes again.
    unrecorded: Mutex<Unrecorded>,
    /// Hand-offs waiting for their record (see [`Worker::record_sent`]).
    sent_log: Mutex<SentLog>,
    /// How many hand-offs were written (or kept, when the database refused) so far: compared
    /// with [`SentLog::pushed`] by whoever waits for them.
    recorded: watch::Sender<u64>,
    /// Messages on the wire or accepted and not yet recorded, at most: a message takes a
    /// permit before it is handed over and gives it back once its record is written. So a
    /// crash sends again at most this many (2 × the SMTP pool: one on each session, one
    /// accepted per session waiting for its record).
    unrecorded_room: Arc<Semaphore>,
}

/// Messages the relay accepted whose record is being written: whatever arrived while the
/// last statement ran goes in the next one (group commit).
#[derive(Default)]
struct SentLog {
    rows: Vec<HandOff>,
    /// Their permits of [`Inner::unrecorded_room`], given back once they are written.
    permits: Vec<OwnedSemaphorePermit>,
    /// A task is writing them.
    committing: bool,
    /// Hand-offs pushed since the worker started.
    pushed: u64,
}

/// Messages a mail server accepted whose record the database refused (a full disk, a
/// read-only file). Written again with backoff; while any are kept the worker claims nothing,
/// since whatever it sent could not be recorded either. Forgetting them would send them again
/// once their lease runs out.
#[derive(Default)]
struct Unrecorded {
    batches: Vec<UnrecordedBatch>,
    /// A lane is writing them right now (from a copy: `batches` keeps them until written).
    writing: bool,
    /// Failed tries so far in this episode.
    tries: i64,
    /// Not before this time is the next try.
    next_try_at: Millis,
}

impl Unrecorded {
    fn is_failing(&self) -> bool {
        self.writing || !self.batches.is_empty()
    }

    fn count(&self) -> usize {
        self.batches.iter().map(|b| b.sent.len()).sum()
    }
}

#[derive(Clone)]
struct UnrecordedBatch {
    lease_id: String,
    /// When they were handed over (their `sent_at`).
    at: Millis,
    sent: Vec<(i64, String)>,
}

/// Delay before writing kept results again after `tries` failures: 1 s doubling up to 30 s,
/// well inside a lease, so the rows are usually still ours when the write finally succeeds.
fn record_backoff_ms(tries: i64) -> Millis {
    1_000i64 << (tries.clamp(1, 6) - 1)
}

/// A spawned task that is aborted when its handle is dropped, so a batch dropped at the end
/// of the shutdown grace takes its deliveries with it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// The earliest retry of a greylisted recipient. Greylisting lets a sender through once it
/// comes back after a delay: postgrey's default is 300 s, and a retry after the usual 30 s
/// backoff is only greylisted again (and may restart the clock).
pub const GREYLIST_RETRY_MS: Millis = 6 * 60_000;

/// Delay before the next attempt after `attempts` failed ones: 30 s doubling up to an hour,
/// with up to a fifth of random jitter so retries of many rows do not arrive together.
pub fn backoff_ms(attempts: i64) -> Millis {
    let exp = attempts.clamp(1, 20) - 1;
    let base: Millis = (30_000i64 << exp).min(3_600_000);
    let jitter = rand::random_range(0..=base / 5);
    base + jitter
}

/// How many rows one lane may claim: no more than it can send within half the lease, so that
/// none waits out its lease behind the rate limit or a slow relay (at 2 messages a second, 4
/// lanes claiming 50 each with a 60 s lease sent 100 people the message twice). Half, because
/// the lease of a batch that takes longer is extended only from then on (see
/// [`Worker::deliver_batch`]). The lane's share of `rate_per_second` bounds it, and so does
/// `concurrency` messages at a time at the measured `latency_ms` each. At least one.
fn claim_size(
    batch_size: u32,
    lease_ms: Millis,
    concurrency: u32,
    rate_per_second: u32,
    latency_ms: Option<f64>,
) -> u32 {
    let half_lease_s = lease_ms as f64 / 2_000.0;
    let mut size = f64::from(batch_size);
    if rate_per_second > 0 {
        size = size.min(f64::from(rate_per_second) / LANES as f64 * half_lease_s);
    }
    if let Some(latency) = latency_ms.filter(|l| *l > 0.0) {
        size = size.min(f64::from(concurrency.max(1)) * half_lease_s * 1_000.0 / latency);
    }
    (size.floor() as u32).clamp(1, batch_size.max(1))
}

/// Weight of the newest batch in the moving average of message latency.
const LATENCY_WEIGHT: f64 = 0.3;

impl Worker {
    /// A worker over the store, the composer and the transport.
    pub fn new(
        store: Store,
        composer: Composer,
        transport: Transport,
        clock: Clock,
        settings: WorkerConfig,
        rate_per_second: u32,
        metrics: Metrics,
    ) -> Self {
        let id = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        // Sessions the relay gets at once (the file transport has none: its lanes' messages).
        let sessions = transport
            .pool_capacity()
            .unwrap_or(settings.concurrency.max(1)) as usize;
        let unrecorded_room = 2 * sessions;
        Self {
            inner: Arc::new(Inner {
                store,
                composer,
                transport,
                clock,
                settings,
                rate_per_second,
                metrics,
                latency_ms: Mutex::new(None),
                id,
                claims: AtomicU64::new(0),
                sends: Mutex::new(HashMap::new()),
                stopping: watch::Sender::new(false),
                unrecorded: Mutex::new(Unrecorded::default()),
                sent_log: Mutex::new(SentLog::default()),
                recorded: watch::Sender::new(0),
                unrecorded_room: Arc::new(Semaphore::new(unrecorded_room)),
            }),
        }
    }

    /// The transport this worker hands messages to.
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Claims one batch and delivers it. Returns how the batch went; an empty claim is idle.
    pub async fn step(&self) -> anyhow::Result<StepOutcome> {
        let inner = &self.inner;
        if !self.record_kept_results(false).await {
            // The database still refuses writes: whatever we sent now could not be recorded.
            return Ok(StepOutcome::default());
        }
        // While the relay refuses our credentials nothing is claimed, and when its next login
        // is due, one message is: it makes the one login attempt.
        let probe = match inner.transport.relay_state() {
            RelayState::Open => false,
            RelayState::RefusedUntil(_) => return Ok(StepOutcome::default()),
            RelayState::ProbeDue => true,
        };
        let now = inner.clock.now_ms();
        let lease_id = format!(
            "{}-{}",
            inner.id,
            inner.claims.fetch_add(1, Ordering::Relaxed)
        );
        let lease_until = now + self.lease_ms();
        let limit = if probe {
            1
        } else {
            claim_size(
                inner.settings.batch_size,
                self.lease_ms(),
                inner.settings.concurrency,
                inner.rate_per_second,
                *inner.latency_ms.lock().expect("latency lock"),
            )
        };
        let batch = inner
            .store
            .claim_deliveries(&lease_id, now, lease_until, limit)
            .await?;
        let mut outcome = StepOutcome {
            claimed: batch.len(),
            ..StepOutcome::default()
        };
        let results = self.deliver_batch(batch, &lease_id, lease_until).await;
        let mut failing_sends = Vec::new();
        let mut sent = Vec::new();
        for (r, send_id) in results {
            match r {
                DeliveryResult::Sent(id, _) => {
                    outcome.sent += 1;
                    sent.push(id);
                }
                DeliveryResult::Retried => outcome.retried += 1,
                DeliveryResult::Skipped => outcome.skipped += 1,
                DeliveryResult::Held => outcome.held += 1,
                DeliveryResult::Failed | DeliveryResult::Suppressed => {
                    outcome.failed += 1;
                    if let Some(id) = send_id
                        && !failing_sends.contains(&id)
                    {
                        failing_sends.push(id);
                    }
                }
            }
        }
        // Each hand-off was recorded as it happened (group commit); the batch ends once the
        // last of them is written, so what a step reports is in the database.
        if !sent.is_empty() {
            self.sent_recorded().await;
        }
        let now = inner.clock.now_ms();
        for id in failing_sends {
            inner
                .store
                .pause_send_if_failing(
                    id,
                    inner.settings.pause_after_failures,
                    inner.settings.pause_failure_percent,
                    now,
                )
                .await?;
        }
        Ok(outcome)
    }

    /// Records a hand-off within milliseconds of the relay's acceptance, not at the end of its
    /// batch, so a crash sends again only what was on the wire or accepted in the last
    /// moments. It joins the log; if no write is under way, a task starts one, which writes
    /// everything that has arrived in one statement and goes on while more arrives.
    fn record_sent(
        &self,
        lease_id: Arc<str>,
        id: i64,
        reply: String,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let start = {
            let mut log = self.inner.sent_log.lock().expect("sent log lock");
            log.rows.push(HandOff {
                lease_id,
                id,
                reply,
            });
            log.permits.extend(permit);
            log.pushed += 1;
            !std::mem::replace(&mut log.committing, true)
        };
        if start {
            tokio::spawn(self.clone().commit_sent());
        }
    }

    /// Writes the log until it is empty. What the database refuses is kept (see
    /// [`Unrecorded`]), and counts as handled: the worker claims nothing until it is written.
    async fn commit_sent(self) {
        let inner = &self.inner;
        loop {
            let (rows, permits, upto) = {
                let mut log = inner.sent_log.lock().expect("sent log lock");
                if log.rows.is_empty() {
                    log.committing = false;
                    return;
                }
                (
                    std::mem::take(&mut log.rows),
                    std::mem::take(&mut log.permits),
                    log.pushed,
                )
            };
            let now = inner.clock.now_ms();
            if let Err(e) = inner.store.record_hand_offs(now, &rows).await {
                let mut by_lease: Vec<UnrecordedBatch> = Vec::new();
                for row in rows {
                    match by_lease.iter_mut().find(|b| *b.lease_id == *row.lease_id) {
                        Some(batch) => batch.sent.push((row.id, row.reply)),
                        None => by_lease.push(UnrecordedBatch {
                            lease_id: row.lease_id.to_string(),
                            at: now,
                            sent: vec![(row.id, row.reply)],
                        }),
                    }
                }
                for batch in by_lease {
                    self.keep_unrecorded(batch.lease_id, now, batch.sent, &e);
                }
            }
            drop(permits);
            inner.recorded.send_replace(upto);
        }
    }

    /// Waits until every hand-off so far is written (or kept for a later write).
    async fn sent_recorded(&self) {
        let target = self.inner.sent_log.lock().expect("sent log lock").pushed;
        let mut recorded = self.inner.recorded.subscribe();
        // The sender lives in `inner`, which `self` holds: it cannot close.
        let _ = recorded.wait_for(|n| *n >= target).await;
    }

    /// Keeps hand-offs the database refused to record. Logged at error level once, when the
    /// worker enters this state, not for every batch.
    fn keep_unrecorded(
        &self,
        lease_id: String,
        at: Millis,
        sent: Vec<(i64, String)>,
        error: &sqlx::Error,
    ) {
        let mut kept = self.inner.unrecorded.lock().expect("unrecorded lock");
        if !kept.is_failing() {
            tracing::error!(worker = %self.inner.id, error = %error, count = sent.len(),
                "the database refuses writes: messages the mail server accepted cannot be \
                 recorded; they are kept in memory and written once it takes writes again, \
                 and no new mail is claimed meanwhile (is the disk full?)");
            kept.tries = 1;
            kept.next_try_at = self.inner.clock.now_ms() + record_backoff_ms(1);
        }
        kept.batches.push(UnrecordedBatch { lease_id, at, sent });
    }

    /// Writes the kept hand-offs when their next try is due (or at once with `now`). Returns
    /// whether none are left, i.e. whether the worker may claim again.
    async fn record_kept_results(&self, now: bool) -> bool {
        let inner = &self.inner;
        let batches = {
            let mut kept = inner.unrecorded.lock().expect("unrecorded lock");
            if !kept.is_failing() {
                return true;
            }
            if kept.writing || (!now && inner.clock.now_ms() < kept.next_try_at) {
                return false;
            }
            // Copies: should this future be dropped midway (a stop), the results stay kept.
            kept.writing = true;
            kept.batches.clone()
        };
        let tried = batches.len();
        let mut failure = None;
        let mut written = 0;
        let mut done_batches = 0;
        for batch in &batches {
            match inner
                .store
                .mark_deliveries_sent(&batch.lease_id, batch.at, &batch.sent)
                .await
            {
                Ok(done) => {
                    done_batches += 1;
                    written += batch.sent.len();
                    let lost = batch.sent.len() as u64 - done.min(batch.sent.len() as u64);
                    if lost > 0 {
                        tracing::error!(worker = %inner.id, count = lost,
                            "results written too late: another worker took these rows over \
                             after their lease ran out and may send them again");
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut kept = inner.unrecorded.lock().expect("unrecorded lock");
        kept.writing = false;
        // Other lanes only append meanwhile: the first `tried` batches are the ones copied.
        debug_assert!(kept.batches.len() >= tried);
        kept.batches.drain(..done_batches);
        match failure {
            Some(e) => {
                kept.tries += 1;
                kept.next_try_at = inner.clock.now_ms() + record_backoff_ms(kept.tries);
                tracing::debug!(error = %e, kept = kept.count(), tries = kept.tries,
                    "the database still refuses writes");
                false
            }
            None if kept.batches.is_empty() => {
                tracing::warn!(worker = %inner.id, count = written, tries = kept.tries,
                    "the database takes writes again: the kept results are recorded; \
                     claiming resumes");
                kept.tries = 0;
                true
            }
            // Another lane kept more meanwhile; they are written on the next step.
            None => false,
        }
    }

    fn lease_ms(&self) -> Millis {
        (self.inner.settings.lease_seconds as i64) * 1000
    }

    /// Delivers a claimed batch, `worker.concurrency` messages at a time. Each delivery is a
    /// task of its own, so rendering (most of the CPU a message costs) spreads over every core
    /// instead of running inside this one task. Once the worker is stopping, no further message
    /// of the batch is started: those rows are released at once, for the next worker to take,
    /// and the ones in flight are left to finish (or to be dropped when the grace ends, which
    /// aborts their tasks with this future).
    ///
    /// A batch still running when half its lease has passed extends the lease of the rows it
    /// holds, in one statement, every half lease: the ones waiting their turn, the ones on the
    /// wire (rows already handed over are recorded as they are, and leave the set). A row the
    /// extension no longer finds ours was taken over and is not started; while the lease
    /// cannot be extended (the database refuses), nothing more of the batch is started. A batch
    /// done within half its lease (the usual case) costs no extra statement.
    async fn deliver_batch(
        &self,
        batch: Vec<ClaimedDelivery>,
        lease_id: &str,
        lease_until: Millis,
    ) -> Vec<(DeliveryResult, Option<i64>)> {
        let inner = &self.inner;
        let lease_ms = self.lease_ms();
        let lease = Arc::<str>::from(lease_id);
        let mut held: Vec<i64> = batch.iter().map(|d| d.id).collect();
        let mut held_until = lease_until;
        let mut stopping = inner.stopping.subscribe();
        let mut queue = batch.into_iter();
        let mut running = FuturesUnordered::new();
        let mut results = Vec::with_capacity(queue.len());
        let mut latency_total = Duration::ZERO;
        let mut timed = 0u32;
        // Wakes the loop when the extension falls due: one timer per batch, not per message.
        let wake_in = |held_until: Millis| {
            // Not sooner than an eighth of the lease: a refused extension is tried again, not
            // in a tight loop.
            let ms = (held_until - lease_ms / 2 - inner.clock.now_ms())
                .clamp((lease_ms / 8).max(10), lease_ms);
            Instant::now() + Duration::from_millis(ms as u64)
        };
        let mut wake = std::pin::pin!(tokio::time::sleep_until(wake_in(held_until)));
        // The rows of this batch the relay accepted, in the order it did.
        let handed_over: Arc<Mutex<Vec<i64>>> = Arc::default();
        loop {
            let stop_seen = *stopping.borrow_and_update();
            if stop_seen && queue.len() > 0 {
                let ids: Vec<i64> = queue.by_ref().map(|d| d.id).collect();
                if let Err(e) = inner.store.release_deliveries(lease_id, &ids).await {
                    tracing::warn!(error = %e, count = ids.len(),
                        "cannot release claimed deliveries; they wait for their lease to run out");
                }
            }
            let extend_at = held_until - lease_ms / 2;
            if inner.clock.now_ms() >= extend_at {
                // Rows already handed over are recorded (or being recorded) as sent: their
                // lease is over, and not losing it to another worker.
                {
                    let done = handed_over.lock().expect("handed over lock");
                    held.retain(|id| !done.contains(id));
                }
                let until = inner.clock.now_ms() + lease_ms;
                match inner.store.extend_leases(lease_id, &held, until).await {
                    Ok(mut still) => {
                        still.sort_unstable();
                        if still.len() < held.len() {
                            tracing::error!(worker = %inner.id, count = held.len() - still.len(),
                                "claimed deliveries were taken over by another worker after \
                                 their lease ran out; this worker does not send them");
                        }
                        held = still;
                        held_until = until;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, count = held.len(),
                            "cannot extend the lease of claimed deliveries; starting no more \
                             of them until it can");
                    }
                }
            }
            // Start only rows surely ours for a while yet: held by us, with a live lease.
            let may_start = inner.clock.now_ms() < held_until - lease_ms / 4;
            while may_start && running.len() < inner.settings.concurrency.max(1) as usize {
                let Some(d) = queue.next() else { break };
                if held.binary_search(&d.id).is_err() {
                    continue;
                }
                let worker = self.clone();
                let lease = lease.clone();
                // Every line of this delivery names it and its send (JSON logs: `spans`).
                let span = tracing::info_span!(
                    "delivery",
                    delivery_id = d.id,
                    send_id = tracing::field::Empty
                );
                if let Some(send_id) = d.send_id {
                    span.record("send_id", send_id);
                }
                let handed_over = handed_over.clone();
                running.push(AbortOnDrop(tokio::spawn(
                    async move {
                        let send_id = d.send_id;
                        let kind = d.kind;
                        let started = Instant::now();
                        let mut permit = None;
                        let result = worker.deliver(d, &lease, &mut permit).await;
                        if let DeliveryResult::Sent(id, reply) = &result {
                            handed_over.lock().expect("handed over lock").push(*id);
                            worker.record_sent(lease.clone(), *id, reply.clone(), permit);
                        }
                        worker.inner.metrics.delivery(kind, result.outcome());
                        (result, send_id, started.elapsed())
                    }
                    .instrument(span),
                )));
            }
            if !may_start
                && running.is_empty()
                && queue.len() > 0
                && held_until <= inner.clock.now_ms()
            {
                // The lease ran out and could not be extended: the rest is another worker's.
                let left = queue.by_ref().count();
                tracing::warn!(worker = %inner.id, count = left,
                    "the lease of claimed deliveries ran out before they could be started; \
                     they are left for the next claim");
            }
            tokio::select! {
                joined = running.next(), if !running.is_empty() => match joined {
                    Some(Ok((result, send_id, took))) => {
                        latency_total += took;
                        timed += 1;
                        results.push((result, send_id));
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "a delivery task failed"),
                    None => {}
                },
                _ = stopping.changed(), if !stop_seen && queue.len() > 0 => {}
                _ = &mut wake, if !running.is_empty() || queue.len() > 0 => {
                    wake.as_mut().reset(wake_in(held_until));
                }
                else => break,
            }
        }
        if timed > 0 {
            let batch_ms = latency_total.as_secs_f64() * 1_000.0 / f64::from(timed);
            let mut latency = inner.latency_ms.lock().expect("latency lock");
            *latency = Some(match *latency {
                Some(before) => before + LATENCY_WEIGHT * (batch_ms - before),
                None => batch_ms,
            });
        }
        results
    }

    /// Delivers one claimed row. The permit of [`Inner::unrecorded_room`] it takes just before
    /// the hand-off is left in `permit`, for the record of a message the relay accepted.
    async fn deliver(
        &self,
        delivery: ClaimedDelivery,
        lease_id: &str,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> DeliveryResult {
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
            return DeliveryResult::Skipped;
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
                return DeliveryResult::Skipped;
            }
            Err(e) => {
                tracing::error!(delivery = delivery.id, error = %e, "cannot render delivery");
                self.finish(&delivery, lease_id, DeliveryStatus::Failed, &e.to_string())
                    .await;
                return DeliveryResult::Failed;
            }
        };
        *permit = Some(
            inner
                .unrecorded_room
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed"),
        );
        let sent = inner.transport.send(message).await;
        if inner.transport.is_smtp()
            && let Some(class) = reply_class(&sent)
        {
            inner.metrics.smtp_reply(class);
        }
        match sent {
            Ok(reply) => {
                tracing::debug!(delivery = delivery.id, "sent");
                DeliveryResult::Sent(delivery.id, reply)
            }
            Err(e) => {
                let give_up = delivery.attempts >= i64::from(inner.settings.max_attempts);
                let failure_kind = match e.kind {
                    SendErrorKind::Relay(fault) => Some(fault.as_str()),
                    _ => None,
                };
                match e.kind {
                    SendErrorKind::Held => {
                        // Untouched: given back without counting an attempt. The pool logged
                        // the refusal once; a line per message would bury it.
                        if let Err(db) = inner
                            .store
                            .release_deliveries(lease_id, &[delivery.id])
                            .await
                        {
                            tracing::warn!(delivery = delivery.id, error = %db,
                                "cannot give back a held delivery; it waits for its lease to run out");
                        }
                        DeliveryResult::Held
                    }
                    SendErrorKind::Transient
                    | SendErrorKind::Relay(_)
                    | SendErrorKind::Greylisted
                        if !give_up =>
                    {
                        let mut wait = backoff_ms(delivery.attempts);
                        if e.kind == SendErrorKind::Greylisted {
                            wait = wait.max(GREYLIST_RETRY_MS);
                        }
                        let next = inner.clock.now_ms() + wait;
                        tracing::warn!(delivery = delivery.id, attempts = delivery.attempts,
                            error = %e.message, "transient failure, will retry");
                        if let Err(db) = inner
                            .store
                            .mark_delivery_retry(
                                delivery.id,
                                lease_id,
                                next,
                                &e.message,
                                failure_kind,
                            )
                            .await
                        {
                            tracing::error!(delivery = delivery.id, error = %db, "cannot record retry");
                        }
                        DeliveryResult::Retried
                    }
                    SendErrorKind::BadRecipient => {
                        tracing::warn!(delivery = delivery.id, error = %e.message,
                            "recipient does not exist; suppressing the address");
                        self.finish(&delivery, lease_id, DeliveryStatus::Suppressed, &e.message)
                            .await;
                        self.suppress(&delivery).await;
                        DeliveryResult::Suppressed
                    }
                    _ => {
                        tracing::warn!(delivery = delivery.id, error = %e.message, "delivery failed");
                        self.finish_because(
                            &delivery,
                            lease_id,
                            DeliveryStatus::Failed,
                            &e.message,
                            failure_kind,
                        )
                        .await;
                        DeliveryResult::Failed
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
        self.finish_because(delivery, lease_id, status, why, None)
            .await;
    }

    /// [`Worker::finish`], naming a failure before anything reached the relay.
    async fn finish_because(
        &self,
        delivery: &ClaimedDelivery,
        lease_id: &str,
        status: DeliveryStatus,
        why: &str,
        failure_kind: Option<&str>,
    ) {
        let now = self.inner.clock.now_ms();
        if let Err(e) = self
            .inner
            .store
            .mark_delivery_final(delivery.id, lease_id, status, now, why, failure_kind)
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
                Ok(Some(self.inner.composer.send_email(
                    &for_mail::recipient(delivery),
                    &send,
                    &for_mail::offering(&offering),
                )?))
            }
            DeliveryKind::Confirmation => {
                let Some(signup) = self.inner.store.confirmation_email(delivery).await? else {
                    return Ok(None);
                };
                Ok(Some(self.inner.composer.confirmation(
                    &for_mail::recipient(delivery),
                    &for_mail::signup(&signup),
                )?))
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
        let parts = (
            Arc::new(CompiledSend::new(&for_mail::templates(&content))?),
            Arc::new(offering),
        );
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
    ///
    /// Once `shutdown` turns true no lane claims again, and the messages in flight get
    /// `worker.shutdown_grace_seconds` to finish. Those still unfinished then are dropped: their
    /// rows keep their lease and are sent again once it runs out, as after a crash. A mail
    /// server that never answers cannot hold a stop longer than that.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, wake: Arc<Notify>) {
        tracing::info!(worker = %self.inner.id, "delivery worker started");
        let mut lanes = JoinSet::new();
        for _ in 0..LANES {
            lanes.spawn(self.clone().lane(shutdown.clone(), wake.clone()));
        }
        let grace = Duration::from_secs(self.inner.settings.shutdown_grace_seconds);
        let mut deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                joined = lanes.join_next() => if joined.is_none() { break },
                // An error: the sender is gone, which stops the lanes as well.
                _ = async { drop(shutdown.wait_for(|stop| *stop).await) }, if deadline.is_none() => {
                    deadline = Some(Instant::now() + grace);
                    self.inner.stopping.send_replace(true);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => {
                    tracing::warn!(worker = %self.inner.id, grace_seconds = grace.as_secs(),
                        "messages still in flight when the shutdown grace ended were dropped; \
                         they are sent again once their lease runs out");
                    lanes.shutdown().await;
                    break;
                }
            }
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
        self.record_kept_results_until(deadline).await;
        // Say goodbye (QUIT) on idle SMTP sessions rather than dropping them, within the grace.
        let _ = tokio::time::timeout_at(deadline, self.inner.transport.close()).await;
        tracing::info!(worker = %self.inner.id, "delivery worker stopped");
    }

    /// At a stop: tries to write the kept results until `deadline`, then names what is lost.
    async fn record_kept_results_until(&self, deadline: Instant) {
        loop {
            match tokio::time::timeout_at(deadline, self.record_kept_results(true)).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => break,
            }
            if Instant::now() + Duration::from_secs(1) >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let kept = self.inner.unrecorded.lock().expect("unrecorded lock");
        let ids: Vec<i64> = kept
            .batches
            .iter()
            .flat_map(|b| b.sent.iter().map(|(id, _)| *id))
            .collect();
        if !ids.is_empty() {
            tracing::error!(worker = %self.inner.id, count = ids.len(), deliveries = ?ids,
                "stopping with results the database refused to record: these messages were \
                 accepted by the mail server and will be sent again once their lease runs out");
        }
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

/// Batches a worker has in flight at once (see [`Worker::run`]), so that the SMTP sessions
/// do not wait for a claim or a record (measured: BENCHMARKS.md, "Measurements behind the code").
pub const LANES: usize = 4;

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sangha".to_owned())
}

#[cfg(test)]
mod tests {
    use super::claim_size;

    #[test]
    fn a_fast_unlimited_relay_claims_whole_batches() {
        assert_eq!(claim_size(50, 60_000, 8, 0, None), 50);
        assert_eq!(claim_size(200, 60_000, 8, 0, Some(5.0)), 200);
    }

    #[test]
    fn a_rate_limit_shared_by_the_lanes_bounds_the_claim() {
        // 2/s over 4 lanes is 0.5/s each: 15 within half of 60 s.
        assert_eq!(claim_size(50, 60_000, 8, 2, None), 15);
        // Less than one fits: still one, whose lease is extended while it waits.
        assert_eq!(claim_size(50, 3_000, 8, 1, None), 1);
    }

    #[test]
    fn a_slow_relay_bounds_the_claim_by_its_measured_latency() {
        // 8 at a time, 3 s each: 80 in 30 s.
        assert_eq!(claim_size(500, 60_000, 8, 0, Some(3_000.0)), 80);
        // 12 s each (waiting for a pooled session included): 20.
        assert_eq!(claim_size(50, 60_000, 8, 0, Some(12_000.0)), 20);
        assert_eq!(claim_size(50, 60_000, 8, 0, Some(600_000.0)), 1);
    }
}
