//! Group commit for signups. Each signup handler hands its signup to one writer task and waits
//! for the answer; the writer takes every signup that arrived while it wrote the last ones and
//! writes them in one transaction ([`Store::record_signups`]).
//!
//! ```text
//!  handler ─┐                     ┌──► record_signups(batch) ──┐
//!  handler ─┼─► channel ─► writer ┤                             ├─► each handler's answer
//!  handler ─┘    (waits)          └──◄── next batch ◄──────────┘
//! ```
//!
//! A signup costs about a dozen statements; written one by one under load, each is a round
//! trip to the database (on SQLite, a wake-up of its connection thread), and signups queue for
//! SQLite's single write lock one by one. A batch costs the same few statements whatever its size. No
//! timer delays anything: an idle writer writes a lone signup at once.
//!
//! If a batch fails as a whole, each of its signups is written again on its own
//! ([`Store::record_signups_or_each`]), so one bad signup fails alone.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::{NewSignup, SignupOutcome, Store};
use crate::clock::Clock;

/// At most this many signups in one transaction.
const BATCH_MAX: usize = 256;

type Answer = Result<SignupOutcome, sqlx::Error>;

struct Job {
    signup: NewSignup,
    answer: oneshot::Sender<Answer>,
}

/// The handle handlers use; cheap to clone. The writer stops when the last handle is gone.
#[derive(Debug, Clone)]
pub struct SignupWriter {
    jobs: mpsc::Sender<Job>,
}

impl SignupWriter {
    /// Starts the writer task on the current tokio runtime. `wake` is notified once per batch
    /// that queued confirmation emails, so one idle delivery lane picks them all up.
    pub fn spawn(store: Store, clock: Clock, wake: Arc<Notify>) -> Self {
        let (jobs, queue) = mpsc::channel(BATCH_MAX * 4);
        tokio::spawn(run(store, clock, wake, queue));
        Self { jobs }
    }

    /// Writes one signup, with the others waiting at the same moment.
    pub async fn record(&self, signup: NewSignup) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { signup, answer })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // The writer answers every job it takes; no answer means it was stopped mid-batch.
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn run(store: Store, clock: Clock, wake: Arc<Notify>, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH_MAX);
    while queue.recv_many(&mut jobs, BATCH_MAX).await > 0 {
        let batch = std::mem::take(&mut jobs);
        // Written in a task of its own: a panic there fails this batch's signups (their
        // handlers see the answers dropped), not every signup after it.
        let written = tokio::spawn(write_batch(
            store.clone(),
            clock.clone(),
            wake.clone(),
            batch,
        ))
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "a batch of signups was not written");
        }
    }
}

async fn write_batch(store: Store, clock: Clock, wake: Arc<Notify>, batch: Vec<Job>) {
    let (signups, answers): (Vec<NewSignup>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|j| (j.signup, j.answer)).unzip();
    let written = store.record_signups_or_each(&signups, clock.now_ms()).await;
    let queued = written
        .iter()
        .filter(|w| w.as_ref().is_ok_and(|o| o.confirmation_queued))
        .count();
    tracing::debug!(signups = signups.len(), queued, "signups written");
    if queued > 0 {
        wake.notify_one();
    }
    for (answer, outcome) in answers.into_iter().zip(written) {
        // A handler that is gone (its client hung up) needs no answer.
        let _ = answer.send(outcome);
    }
}
