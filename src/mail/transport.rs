//! Where messages go: the file transport (one `.eml` per message, the zero-setup default) or
//! SMTP through our own pool of sessions ([`super::smtp`]).

use std::path::PathBuf;

use lettre::Message;
use rand::Rng;

use super::dkim::Dkim;
use super::smtp::SmtpPool;
use crate::config::{Config, TransportKind};

/// Where messages go, and the DKIM keys that sign each one on its way.
#[derive(Clone)]
pub struct Transport {
    route: Route,
    dkim: Dkim,
}

#[derive(Clone)]
enum Route {
    /// Writes each message as `<random>.eml` in the folder.
    File(PathBuf),
    Smtp(SmtpPool),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.route {
            Route::File(dir) => write!(f, "Transport::File({})", dir.display())?,
            Route::Smtp(pool) => write!(f, "Transport::Smtp({pool:?})")?,
        }
        if self.dkim.is_enabled() {
            write!(f, " signed by {:?}", self.dkim)?;
        }
        Ok(())
    }
}

/// Writes a message into the outbox folder atomically: first under a hidden temporary name,
/// then renamed, so whoever watches the folder never reads half a message.
async fn write_eml(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<String> {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let name = crate::domain::hex(&id);
    let tmp = dir.join(format!(".{name}.eml.tmp"));
    let path = dir.join(format!("{name}.eml"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(format!("written to {}", path.display()))
}

/// Whether trying again later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// 4xx replies, lost connections, timeouts: retry later.
    Transient,
    /// 5xx replies: retrying will not help.
    Permanent,
    /// A 5.1.x reply: the address itself is bad; stop mailing it.
    BadRecipient,
    /// A 4xx reply that greylists the recipient (`451 4.7.1`, or "greylist" in its text):
    /// retried, but not before the greylisting server lets it through (minutes, not seconds).
    Greylisted,
    /// Nothing of the message reached the relay: connecting, TLS or the login failed. Retried
    /// like `Transient`; a delivery that ends failed this way is not the message's fault, and
    /// `sangha sends retry` puts it back once the relay or the configuration is fixed.
    Relay(RelayFault),
    /// Not tried at all: the relay refused our credentials, and the pool waits for its next
    /// single login attempt instead of trying a login per message. The message is untouched;
    /// the delivery is given back without counting an attempt.
    Held,
}

pub use crate::domain::RelayFault;

/// Whether the transport takes messages now (see [`Transport::relay_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    Open,
    /// The relay refused our credentials; the next login is tried at this time, by one
    /// message only.
    RefusedUntil(tokio::time::Instant),
    /// The relay refused our credentials and one login may be tried now.
    ProbeDue,
}

/// A message the transport did not take: the kind decides whether to retry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: SendErrorKind,
    pub message: String,
    /// The relay's reply code, when a reply refused the message (`None`: no reply came, or
    /// the message failed before it reached the relay).
    pub reply_code: Option<u16>,
}

impl Transport {
    /// The configured transport, signing nothing (see [`Transport::with_dkim`]).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let route = match config.mail.transport {
            TransportKind::File => {
                let dir = config.outbox_dir();
                std::fs::create_dir_all(&dir).map_err(|e| {
                    anyhow::anyhow!("cannot create outbox folder {}: {e}", dir.display())
                })?;
                Route::File(dir)
            }
            // EHLO announces the Message-ID domain: a name the operator controls and that
            // config validation has checked, where the machine's own hostname is often a
            // container id that relays refuse as not fully qualified (and that would show up
            // in every Received header).
            TransportKind::Smtp => Route::Smtp(SmtpPool::new(
                &config.smtp,
                config.smtp_ca_file().as_deref(),
                &config.message_id_domain(),
            )?),
        };
        Ok(Self {
            route,
            dkim: Dkim::default(),
        })
    }

    /// This transport, signing every message with `dkim`'s keys.
    pub fn with_dkim(mut self, dkim: Dkim) -> Self {
        self.dkim = dkim;
        self
    }

    /// Whether messages go to an SMTP relay (not the outbox folder).
    pub fn is_smtp(&self) -> bool {
        matches!(self.route, Route::Smtp(_))
    }

    /// Hands one message over, signed, as it goes on the wire. Returns the server's reply (or
    /// the file's id).
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        let formatted = message.formatted();
        let signed = if self.dkim.is_enabled() {
            // An RSA signature costs about a millisecond of CPU: it runs on the blocking pool,
            // so the web server and the other deliveries sharing these threads never wait on it.
            let dkim = self.dkim.clone();
            tokio::task::spawn_blocking(move || dkim.sign(formatted))
                .await
                .unwrap_or_else(|e| Err(format!("DKIM signing stopped: {e}")))
        } else {
            Ok(formatted)
        };
        let email = signed.map_err(|message| SendError {
            kind: SendErrorKind::Permanent,
            message,
            reply_code: None,
        })?;
        match &self.route {
            Route::File(dir) => write_eml(dir, &email).await.map_err(|e| SendError {
                kind: SendErrorKind::Transient,
                message: format!("file transport: {e}"),
                reply_code: None,
            }),
            Route::Smtp(pool) => pool.send(message.envelope(), email).await,
        }
    }

    /// Checks the way out without sending mail (an SMTP session is opened and closed) and
    /// says what it found.
    pub async fn probe(&self) -> Result<String, SendError> {
        match &self.route {
            Route::File(dir) => Ok(format!("messages are written to {}", dir.display())),
            Route::Smtp(pool) => pool.probe().await,
        }
    }

    /// Whether messages may be handed over now: after the relay refused our credentials,
    /// callers should not claim work until the next login attempt is due, and then only one
    /// message's worth.
    pub fn relay_state(&self) -> RelayState {
        match &self.route {
            Route::File(_) => RelayState::Open,
            Route::Smtp(pool) => pool.relay_state(),
        }
    }

    /// Shortens the wait before the first login attempt after the relay refused our
    /// credentials (30 s), for tests.
    #[doc(hidden)]
    pub fn set_login_backoff(&self, first: std::time::Duration) {
        if let Route::Smtp(pool) = &self.route {
            pool.set_login_backoff(first);
        }
    }

    /// Sessions the SMTP relay lets us have now (`None` for the file transport), for tests.
    #[doc(hidden)]
    pub fn pool_capacity(&self) -> Option<u32> {
        match &self.route {
            Route::File(_) => None,
            Route::Smtp(pool) => Some(pool.capacity()),
        }
    }

    /// Ends idle SMTP sessions politely (`QUIT`); call on shutdown. Sending afterwards still
    /// works and opens new sessions.
    pub async fn close(&self) {
        if let Route::Smtp(pool) = &self.route {
            pool.close().await;
        }
    }
}
