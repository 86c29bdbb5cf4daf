//! The scheduler: turns sends whose time has come into deliveries (set-based, in batches, see
//! `store::sends`), and marks sends done once every delivery is final. It keeps no state of its
//! own, so running it in more than one process is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::store::Store;

/// What one scheduler step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleOutcome {
    pub deliveries_created: u64,
    pub sends_finished: usize,
}

#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    clock: Clock,
    message_id_domain: String,
    batch_size: u32,
}

impl Scheduler {
    pub fn new(store: Store, clock: Clock, message_id_domain: &str, batch_size: u32) -> Self {
        Self {
            store,
            clock,
            message_id_domain: message_id_domain.to_owned(),
            batch_size,
        }
    }

    /// Fans out every due send completely (each batch its own transaction), then closes the
    /// sends that have nothing pending.
    pub async fn step(&self) -> anyhow::Result<ScheduleOutcome> {
        let now = self.clock.now_ms();
        let mut outcome = ScheduleOutcome::default();
        for send_id in self.store.sends_to_fan_out(now).await? {
            let mut created = 0;
            while let Some(n) = self
                .store
                .fan_out_batch(send_id, &self.message_id_domain, now, self.batch_size)
                .await?
            {
                created += n;
            }
            tracing::info!(send = send_id, deliveries = created, "send fanned out");
            outcome.deliveries_created += created;
        }
        let finished = self.store.finish_sends(now).await?;
        for id in &finished {
            tracing::info!(send = id, "send finished");
        }
        outcome.sends_finished = finished.len();
        Ok(outcome)
    }

    /// Steps every `interval` until `shutdown`, waking the workers when deliveries appear.
    pub async fn run(
        self,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
        wake_workers: Arc<Notify>,
    ) {
        while !*shutdown.borrow() {
            match self.step().await {
                Ok(outcome) if outcome.deliveries_created > 0 => {
                    wake_workers.notify_waiters();
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "scheduler step failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
    }
}
