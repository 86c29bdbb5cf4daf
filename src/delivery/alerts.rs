//! The owner's alerts: watches the queue for deliveries that wait too long, and emails each
//! alert raised (here, or where a send paused itself or a report was recorded) to
//! `site.owner_email`, once, from its row in the store.

use std::time::Duration;

use lettre::message::Mailbox;
use tokio::sync::watch;

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::mail::{Transport, build_notice};
use crate::store::{AlertRow, Store};

/// How long a claimed alert is held while its email is handed over.
const LEASE_MS: Millis = 60_000;
/// An alert not emailed within a day of being raised is no longer news: it stays listed by
/// `sangha alerts`, and is not sent.
const FRESH_MS: Millis = 86_400_000;
/// The longest wait between two attempts at an alert's email.
const MAX_RETRY_MS: Millis = 3_600_000;

/// What one look did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertStep {
    /// Alerts raised by this look (the late queue).
    pub raised: usize,
    /// Alerts the owner's relay took.
    pub emailed: usize,
    /// Alerts whose email failed and waits for another attempt.
    pub failed: usize,
}

/// Raises the late-queue alert and emails the alerts that wait.
#[derive(Clone)]
pub struct Alerts {
    store: Store,
    clock: Clock,
    transport: Transport,
    from: Mailbox,
    owner: Option<lettre::Address>,
    site: String,
    message_id_domain: String,
    late_ms: Millis,
    every: Duration,
}

impl Alerts {
    /// The alerts of `config`, emailed through `transport`.
    pub fn new(store: Store, clock: Clock, config: &Config, transport: Transport) -> Self {
        Self {
            store,
            clock,
            transport,
            from: config.mail.from.clone(),
            owner: config.site.owner_email.clone(),
            site: config.site.name.clone(),
            message_id_domain: config.message_id_domain(),
            late_ms: i64::from(config.alerts.queue_late_minutes) * 60_000,
            every: Duration::from_secs(config.alerts.check_seconds.max(1)),
        }
    }

    /// Looks at the queue once, then emails every alert that waits (none without an owner's
    /// address: they are logged when raised and listed by `sangha alerts`).
    pub async fn step(&self) -> anyhow::Result<AlertStep> {
        let now = self.clock.now_ms();
        let mut step = AlertStep::default();
        if self.late_ms > 0 && self.store.watch_queue(now, self.late_ms).await?.is_some() {
            step.raised += 1;
        }
        let Some(owner) = &self.owner else {
            return Ok(step);
        };
        while let Some(alert) = self
            .store
            .claim_alert(now, now - FRESH_MS, LEASE_MS)
            .await?
        {
            match self.email(owner, &alert).await {
                Ok(()) => {
                    self.store
                        .alert_emailed(alert.id, self.clock.now_ms())
                        .await?;
                    tracing::info!(alert = alert.id, "alert emailed to the owner");
                    step.emailed += 1;
                }
                Err(error) => {
                    let wait = (60_000 << alert.attempts.clamp(1, 7)).min(MAX_RETRY_MS);
                    tracing::warn!(alert = alert.id, attempts = alert.attempts, %error,
                        "cannot email an alert to the owner; trying again later");
                    self.store
                        .alert_not_emailed(alert.id, now + wait, &error)
                        .await?;
                    step.failed += 1;
                }
            }
        }
        Ok(step)
    }

    async fn email(&self, owner: &lettre::Address, alert: &AlertRow) -> Result<(), String> {
        let subject = format!("[{}] {}", self.site, alert.summary);
        let raised = jiff::Timestamp::from_millisecond(alert.raised_at)
            .map_or_else(|_| alert.raised_at.to_string(), |t| t.to_string());
        let text = format!(
            "{}\n\nRaised at {raised} (UTC). `sangha alerts` lists every alert.\n\n-- \nSangha, \
             for {}\n",
            alert.detail, self.site
        );
        let message_id = format!(
            "<alert.{}.{}@{}>",
            alert.id,
            crate::store::new_message_id_prefix(),
            self.message_id_domain
        );
        let message = build_notice(&self.from, owner.clone(), &message_id, &subject, text)
            .map_err(|e| format!("cannot build the alert email: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Looks every `alerts.check_seconds` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let stepped = tokio::select! {
                stepped = self.step() => stepped,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Err(e) = stepped {
                tracing::warn!("cannot look at the alerts: {e:#}");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
