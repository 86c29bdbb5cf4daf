//! The bounce mailbox, read over IMAP: each message of `bounces.imap.folder` is fetched
//! (without marking it seen), recorded through [`Recorder`], and only then moved to
//! `bounces.imap.processed_folder`. Nothing else is deleted or flagged.
//!
//! ```text
//!   connect (tls | starttls | none) ─▶ LOGIN ─▶ SELECT folder ─▶ UID SEARCH ALL
//!     for each UID: UID FETCH BODY.PEEK[] ─▶ Incoming ─▶ Recorder::record
//!        ok  ─▶ UID MOVE (or UID COPY + UID STORE \Deleted + UID EXPUNGE of that UID)
//!        err ─▶ left in place, read again at the next poll
//! ```
//!
//! A message recorded but not moved (a poll cut short) is read again and recorded as nothing
//! new: a report is known by its key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use crate::bounces::{Incoming, Recorder};
use crate::config::{ImapConfig, TlsMode};
use crate::domain::BounceSource;

/// The longest one network step (connecting, one command) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait between two polls after failed connections.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCount {
    /// Messages fetched from the folder.
    pub read: usize,
    /// Messages that recorded something new.
    pub recorded: usize,
    /// Messages that were recorded before (the same report again): nothing done twice.
    pub known: usize,
    /// Messages whose recording failed: left in the folder for the next poll.
    pub failed: usize,
    /// Messages moved to the processed folder.
    pub moved: usize,
}

impl fmt::Display for PollCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} read, {} recorded, {} already known, {} failed, {} moved",
            self.read, self.recorded, self.known, self.failed, self.moved
        )
    }
}

/// Polls the bounce mailbox and records what it holds.
#[derive(Clone)]
pub struct BounceMailbox {
    config: ImapConfig,
    recorder: Recorder,
}

impl BounceMailbox {
    /// A poller of the configured mailbox, recording through `recorder`.
    pub fn new(config: ImapConfig, recorder: Recorder) -> Self {
        Self { config, recorder }
    }

    /// Polls every `poll_seconds` until `stop` turns true; a failed poll is logged and tried
    /// again later, each failure in a row doubling the wait (up to an hour).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.config.poll_seconds.max(1));
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            let polled = tokio::select! {
                polled = self.poll_once() => polled,
                _ = stop.wait_for(|s| *s) => return,
            };
            let wait = match polled {
                Ok(count) => {
                    failures = 0;
                    if count.read > 0 {
                        tracing::info!(%count, "bounce mailbox read");
                    }
                    every
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(every, failures);
                    tracing::warn!(
                        host = %self.config.host,
                        "cannot read the bounce mailbox: {e:#}; trying again in {}s",
                        wait.as_secs()
                    );
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One poll: connects, records and moves every message of the folder, logs out.
    pub async fn poll_once(&self) -> anyhow::Result<PollCount> {
        let c = &self.config;
        let host = c.host.trim().trim_start_matches('[').trim_end_matches(']');
        let tcp = step(TcpStream::connect((host, c.port)))
            .await
            .with_context(|| format!("cannot connect to {host}:{}", c.port))?;
        match c.tls {
            TlsMode::None => self.session(Client::new(tcp), true).await,
            TlsMode::Tls => {
                let tls = tls_connect(host, tcp).await?;
                self.session(Client::new(tls), true).await
            }
            TlsMode::Starttls => {
                let mut client = Client::new(tcp);
                greeting(&mut client).await?;
                step(client.run_command_and_check_ok("STARTTLS", None))
                    .await
                    .context("STARTTLS refused")?;
                let tls = tls_connect(host, client.into_inner()).await?;
                self.session(Client::new(tls), false).await
            }
        }
    }

    async fn session<T>(&self, mut client: Client<T>, greet: bool) -> anyhow::Result<PollCount>
    where
        T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
    {
        let c = &self.config;
        if greet {
            greeting(&mut client).await?;
        }
        let login = client.login(&c.user, c.password.expose());
        let mut session = step(async { login.await.map_err(|(e, _)| e) })
            .await
            .map_err(|e| anyhow!("login as {} refused: {e}", c.user))?;
        let count = self.process(&mut session).await;
        // The count stands even when the goodbye fails.
        let _ = step(session.logout()).await;
        count
    }

    async fn process<T>(&self, session: &mut Session<T>) -> anyhow::Result<PollCount>
    where
        T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
    {
        let c = &self.config;
        step(session.select(&c.folder))
            .await
            .with_context(|| format!("cannot open folder {}", c.folder))?;
        let mut uids: Vec<u32> = step(session.uid_search("ALL")).await?.into_iter().collect();
        uids.sort_unstable();
        let mut count = PollCount::default();
        if uids.is_empty() {
            return Ok(count);
        }
        let capabilities = step(session.capabilities()).await?;
        let can_move = capabilities.has_str("MOVE");
        let uidplus = capabilities.has_str("UIDPLUS");
        if !can_move && !uidplus {
            bail!(
                "the server offers neither MOVE nor UIDPLUS, so a message cannot be moved \
                 without risking others; nothing was read"
            );
        }
        self.ensure_processed_folder(session).await?;
        for uid in uids {
            let Some(raw) = fetch(session, uid).await? else {
                // Gone since the search (another client moved it).
                continue;
            };
            count.read += 1;
            let incoming = Incoming::from_message(&raw, BounceSource::Imap);
            match self.recorder.record(&incoming).await {
                Ok(recorded) if recorded.iter().any(|r| r.id.is_some()) => count.recorded += 1,
                Ok(_) => count.known += 1,
                Err(e) => {
                    tracing::warn!(
                        uid,
                        "cannot record a bounce mailbox message: {e:#}; left in {}",
                        c.folder
                    );
                    count.failed += 1;
                    continue;
                }
            }
            move_one(session, uid, &c.processed_folder, can_move)
                .await
                .with_context(|| format!("cannot move message {uid} to {}", c.processed_folder))?;
            count.moved += 1;
        }
        Ok(count)
    }

    async fn ensure_processed_folder<T>(&self, session: &mut Session<T>) -> anyhow::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
    {
        let folder = &self.config.processed_folder;
        // The pattern as a quoted string (async-imap sends it as given).
        let pattern = format!("\"{}\"", folder.replace('\\', "\\\\").replace('"', "\\\""));
        let names: Vec<_> = step(async {
            session
                .list(None, Some(&pattern))
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        if !names.iter().any(|n| n.name() == folder) {
            step(session.create(folder))
                .await
                .with_context(|| format!("cannot create folder {folder}"))?;
        }
        Ok(())
    }
}

/// The wait after `failures` failed polls in a row: `every`, doubled each time, at most an
/// hour (or `every`, when that is longer).
fn backoff(every: Duration, failures: u32) -> Duration {
    let doubled = every.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF.max(every))
}

/// One network step, bounded by [`STEP_TIMEOUT`].
async fn step<F, V, E>(future: F) -> anyhow::Result<V>
where
    F: Future<Output = Result<V, E>>,
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => bail!(
            "the server did not answer within {}s",
            STEP_TIMEOUT.as_secs()
        ),
    }
}

/// Reads the server's greeting.
async fn greeting<T>(client: &mut Client<T>) -> anyhow::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
{
    match step(client.read_response()).await? {
        Some(_) => Ok(()),
        None => bail!("the server closed the connection before greeting"),
    }
}

/// The message's bytes, fetched without setting `\Seen`; `None` when it is gone.
async fn fetch<T>(session: &mut Session<T>, uid: u32) -> anyhow::Result<Option<Vec<u8>>>
where
    T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
{
    let fetches = step(async {
        session
            .uid_fetch(uid.to_string(), "BODY.PEEK[]")
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await
    .with_context(|| format!("cannot fetch message {uid}"))?;
    Ok(fetches
        .iter()
        .find(|f| f.uid == Some(uid))
        .and_then(|f| f.body())
        .map(<[u8]>::to_vec))
}

/// Moves one message by UID: `UID MOVE` when offered, else copy, mark that one message
/// `\Deleted` and expunge that UID alone (UIDPLUS).
async fn move_one<T>(
    session: &mut Session<T>,
    uid: u32,
    folder: &str,
    can_move: bool,
) -> anyhow::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
{
    let set = uid.to_string();
    if can_move {
        return step(session.uid_mv(&set, folder)).await;
    }
    step(session.uid_copy(&set, folder)).await?;
    step(async {
        session
            .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    step(async {
        session
            .uid_expunge(&set)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    Ok(())
}

/// A TLS connection to `host`, its certificate checked against the built-in roots (those
/// lettre uses for SMTP) and the system's.
async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // A system certificate rustls cannot use is skipped, as lettre's loader does.
    let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a host name TLS can check"))?;
    step(TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .with_context(|| format!("TLS with {host} failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_double_the_wait_up_to_an_hour() {
        let every = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|f| backoff(every, f).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        let slow = Duration::from_secs(7200);
        assert_eq!(backoff(slow, 5), slow);
    }
}
