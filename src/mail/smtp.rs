//! Our own small pool of SMTP sessions, built on lettre's `AsyncSmtpConnection`.
//! Where the server offers PIPELINING (RFC 2920), `MAIL FROM`, `RCPT TO` and `DATA` go out in
//! one write, and the body with its closing dot in one more: two round trips per message.
//!
//! Why not lettre's pooled `AsyncSmtpTransport`: it opens its sockets without `TCP_NODELAY`,
//! and Nagle's algorithm then stalls every message on the server's delayed acknowledgement
//! (measured: BENCHMARKS.md, "Measurements behind the code"). Here the pool opens the TCP stream itself, turns Nagle off, and
//! hands the stream to lettre for the SMTP conversation.
//!
//! ```text
//!  send(message)
//!    │  rate limiter (when smtp.rate_per_second > 0)   one token per message, shared
//!    │  semaphore (smtp.pool_size permits)             at most pool_size sessions open
//!    ▼
//!  idle sessions (a stack: last in, first out) ──pop──► MAIL FROM, RCPT TO, DATA, body, "."
//!    ▲             or, when empty: connect ────────────────────┘           │
//!    │                                                                     ▼
//!    └──── pushed back when the session is still in step with the server (after a 2xx,
//!          or after a clean 4xx/5xx reply and a successful RSET); dropped on any doubt
//! ```
//!
//! Sessions idle for more than a minute are closed: servers drop quiet clients, and the stack
//! order lets the surplus sessions of a finished campaign age out while busy ones stay warm.
//!
//! # A relay that limits connections
//!
//! A relay may allow fewer sessions than `smtp.pool_size` (Postfix's
//! `smtpd_client_connection_count_limit`: a `421` greeting or a refused connect). Each such
//! refusal shrinks the pool by one session, down to one, and closes a surplus idle session;
//! after [`GROW_AFTER`] messages accepted in a row it grows back by one, up to `pool_size`.
//! Permits taken away while in use are taken when they are given back (the `debt`).
//!
//! A session whose transactions the relay refused [`SESSION_ERROR_LIMIT`] times in a row is closed
//! rather than fed more: Postfix delays every reply of a client after errors
//! (`smtpd_error_sleep_time`), and greylisting servers often tarpit.
//!
//! # A refused login
//!
//! Real providers lock an account after a burst of failed logins, so a wrong password must
//! cost one failed `AUTH`, not one per message. Until a login has succeeded, sessions are
//! opened one at a time. Once the relay refuses our credentials the pool is *refused*: every
//! message is answered [`SendErrorKind::Held`] at once, without a connection, until the next
//! login attempt is due (30 s, doubling up to 15 min); then one message, the probe, opens a
//! session while the others are still held. The refusal is logged once, at error level; a
//! probe that succeeds opens the pool again and says so.

use std::num::NonZeroU32;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::transport::{RelayFault, RelayState, SendError, SendErrorKind};
use crate::config::{CertificateSha256, SmtpConfig, TlsMode, TrustStore};

/// Sessions idle for longer than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the background task looks for sessions idle for too long.
const REAP_INTERVAL: Duration = Duration::from_secs(10);
/// How long a polite `QUIT` or a `RSET` may take before the session is simply dropped.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages accepted in a row before a shrunk pool grows back by one session.
const GROW_AFTER: u32 = 100;
/// Refused transactions in a row after which a session is closed instead of reused.
const SESSION_ERROR_LIMIT: u32 = 3;
/// After the relay refuses our credentials, the next login is tried after this long, then
/// after twice as long each time, up to [`LOGIN_BACKOFF_MAX`].
const LOGIN_BACKOFF_FIRST: Duration = Duration::from_secs(30);
const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// A bounded pool of authenticated SMTP sessions to one server. Cloning is cheap and every
/// clone shares the same sessions, permits and rate limit.
#[derive(Clone)]
pub struct SmtpPool {
    inner: Arc<Inner>,
}

struct Inner {
    server: Server,
    pool_size: u32,
    /// Sessions waiting for their next message; the most recently used is on top.
    idle: Mutex<Vec<IdleSession>>,
    /// One permit per session in use or being opened.
    permits: Semaphore,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Set while the relay refuses our credentials (see the module's documentation).
    refusal: Mutex<Option<Refusal>>,
    /// A login has succeeded since the pool was made or last refused: sessions may be opened
    /// side by side. Before that they are opened one at a time, under `first_login`.
    proven: AtomicBool,
    first_login: tokio::sync::Mutex<()>,
    /// The first wait after a refusal ([`LOGIN_BACKOFF_FIRST`]; tests shorten it).
    login_backoff: Mutex<Duration>,
    /// How many sessions the relay lets us have (see the module's documentation).
    capacity: Mutex<Capacity>,
}

/// The pool's size as the relay allows it.
struct Capacity {
    /// Sessions allowed now: `permits` holds this many, less `debt`.
    current: u32,
    /// Permits to take away as they come back (they were in use when the pool shrank).
    debt: u32,
    /// Messages accepted since the last change.
    good: u32,
}

/// A permit of the pool's semaphore that is forgotten instead of given back while the pool
/// owes permits (it shrank while they were in use).
struct SessionPermit<'a> {
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
    inner: &'a Inner,
}

impl Drop for SessionPermit<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut capacity = self.inner.lock_capacity();
        if capacity.debt > 0 {
            capacity.debt -= 1;
            permit.forget();
        }
    }
}

/// The relay refused our credentials.
struct Refusal {
    /// What it said, e.g. `AUTH: permanent error (535): 5.7.8 Authentication failed`.
    reason: String,
    /// Not before this time is the next login tried.
    next_login: Instant,
    /// The wait before the one after.
    backoff: Duration,
    /// One message is trying to log in right now.
    probing: bool,
}

/// What [`Inner::admit`] lets a message do.
enum Admission {
    /// Send as usual.
    Open,
    /// Send on a new session: its login tells whether the relay takes our credentials again.
    Probe(ProbeGuard),
}

/// Ends a probe that was dropped before its login finished (its task was aborted), so the
/// pool does not wait forever for its answer.
struct ProbeGuard(Option<Arc<Inner>>);

impl ProbeGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take()
            && let Some(refusal) = inner.lock_refusal().as_mut()
        {
            refusal.probing = false;
        }
    }
}

struct IdleSession {
    session: Session,
    since: Instant,
}

/// An open, authenticated SMTP session.
struct Session {
    conn: AsyncSmtpConnection,
    /// The server offers PIPELINING (RFC 2920): `MAIL FROM`, `RCPT TO` and `DATA` go out in
    /// one write and their replies are read afterwards, one round trip instead of three.
    pipelining: bool,
    /// Transactions the relay refused on this session in a row.
    errors: u32,
}

/// How to open a session.
struct Server {
    host: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    /// `smtp.certificate_sha256`: checked right after the handshake, before `AUTH`.
    pin: Option<CertificateSha256>,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl std::fmt::Debug for SmtpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server = &self.inner.server;
        f.debug_struct("SmtpPool")
            .field("server", &format_args!("{}:{}", server.host, server.port))
            .field("tls", &server.tls)
            .field("authenticated", &server.credentials.is_some())
            .field("pool_size", &self.inner.pool_size)
            .field("idle", &self.inner.lock_idle().len())
            .finish()
    }
}

impl SmtpPool {
    /// Sets the pool up; no connection is opened before the first message. `ca_file` is
    /// `smtp.ca_file` as found from the config's folder; `hello_name` is the domain announced
    /// in `EHLO`.
    pub fn new(
        smtp: &SmtpConfig,
        ca_file: Option<&Path>,
        hello_name: &str,
    ) -> anyhow::Result<Self> {
        for warning in smtp.warnings() {
            tracing::warn!("{warning}");
        }
        let host = relay_host(&smtp.host);
        let tls_parameters = match smtp.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Tls => Some(tls_parameters(smtp, &host, ca_file)?),
        };
        let credentials = (!smtp.username.is_empty())
            .then(|| Credentials::new(smtp.username.clone(), smtp.password.expose().to_owned()));
        // A burst of one spaces messages evenly (one every 1/n s), so no one-second window
        // ever sees more than about n of them; the default burst of n would allow ~2n.
        let limiter = NonZeroU32::new(smtp.rate_per_second)
            .map(|rate| RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN)));
        let pool_size = smtp.pool_size.max(1);
        let inner = Arc::new(Inner {
            server: Server {
                host,
                port: smtp.port,
                tls: smtp.tls,
                tls_parameters,
                pin: smtp.certificate_sha256,
                hello: ClientId::Domain(hello_name.to_owned()),
                credentials,
                timeout: Duration::from_secs(smtp.timeout_seconds.max(1)),
            },
            pool_size,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(pool_size as usize),
            limiter,
            refusal: Mutex::new(None),
            proven: AtomicBool::new(false),
            first_login: tokio::sync::Mutex::new(()),
            login_backoff: Mutex::new(LOGIN_BACKOFF_FIRST),
            capacity: Mutex::new(Capacity {
                current: pool_size,
                debt: 0,
                good: 0,
            }),
        });
        spawn_reaper(&inner);
        Ok(SmtpPool { inner })
    }

    /// Sends one message and returns the server's reply, e.g. `250 2.0.0 Ok: queued`.
    ///
    /// # When a message is sent again
    ///
    /// At most once, and only when nothing of it can have been accepted: a session taken from
    /// the idle stack that fails at `MAIL FROM` with no reply at all (a broken pipe, a reset, an
    /// unparseable or missing answer, a timeout) or with `421` (the server is closing the
    /// channel, e.g. a per-connection message limit) was simply stale, and the message is sent
    /// again once on a newly opened session. Any other failure is returned as it is: after
    /// `MAIL FROM` was accepted the session was alive, and once the body is on its way a lost
    /// reply is ambiguous (the server may have queued the message). Those come back as
    /// `Transient`, and the outbox retries later with the same Message-ID.
    ///
    /// While the relay refuses our credentials, messages come back [`SendErrorKind::Held`]
    /// without a connection (see the module's documentation).
    pub async fn send(&self, envelope: &Envelope, email: Vec<u8>) -> Result<String, SendError> {
        let inner = &self.inner;
        let admission = inner.admit()?;
        if let Some(limiter) = &inner.limiter {
            limiter.until_ready().await;
        }
        let _permit = SessionPermit {
            permit: Some(
                inner
                    .permits
                    .acquire()
                    .await
                    .expect("the pool's semaphore is never closed"),
            ),
            inner,
        };

        let idle = match admission {
            Admission::Open => inner.take_idle(),
            Admission::Probe(_) => None,
        };
        let (mut session, mut reused) = match idle {
            Some(session) => (session, true),
            None => (self.connect(admission).await?, false),
        };
        loop {
            let deadline = Instant::now() + inner.server.timeout;
            match transact(&mut session, envelope, &email, deadline).await {
                Ok(response) => {
                    session.errors = 0;
                    inner.put_back(session);
                    inner.accepted();
                    return Ok(reply_text(&response));
                }
                Err(failure) if failure.fate == Fate::Stale && reused => {
                    tracing::debug!(error = %failure.error, "stale pooled SMTP session; reconnecting");
                    drop(session);
                    session = self.connect(Admission::Open).await?;
                    reused = false;
                }
                Err(failure) => {
                    if failure.fate == Fate::InStep {
                        session.errors += 1;
                        if session.errors >= SESSION_ERROR_LIMIT {
                            tracing::debug!(
                                errors = session.errors,
                                "closing an SMTP session after repeated refusals"
                            );
                            quit(session).await;
                        } else if reset(&mut session.conn).await {
                            inner.put_back(session);
                        }
                    }
                    return Err(failure.error);
                }
            }
        }
    }

    /// Whether the relay takes our credentials (see [`RelayState`]).
    pub fn relay_state(&self) -> RelayState {
        match self.inner.lock_refusal().as_ref() {
            None => RelayState::Open,
            Some(refusal) if refusal.probing || Instant::now() < refusal.next_login => {
                RelayState::RefusedUntil(refusal.next_login)
            }
            Some(_) => RelayState::ProbeDue,
        }
    }

    /// Shortens the wait before the first login attempt after a refusal (30 s), for tests.
    #[doc(hidden)]
    pub fn set_login_backoff(&self, first: Duration) {
        *self
            .inner
            .login_backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = first;
    }

    /// Opens a session, one at a time until a login has succeeded, and keeps the pool's
    /// refusal state up to date with how the login went.
    async fn connect(&self, admission: Admission) -> Result<Session, SendError> {
        let inner = &self.inner;
        let _alone = if inner.proven.load(Ordering::Acquire) {
            None
        } else {
            let turn = inner.first_login.lock().await;
            // Another message's login may have failed while this one waited for its turn.
            if matches!(admission, Admission::Open) {
                inner.admit_again()?;
            }
            if inner.proven.load(Ordering::Acquire) {
                None
            } else {
                Some(turn)
            }
        };
        let opened = inner.server.connect().await;
        if let Err(e) = &opened
            && e.kind == SendErrorKind::Relay(RelayFault::Connect)
        {
            self.shrink(&e.message).await;
        }
        match &opened {
            Ok(_) => {
                inner.proven.store(true, Ordering::Release);
                if inner.lock_refusal().take().is_some() {
                    tracing::info!(relay = %inner.server.label(),
                        "the relay accepted the SMTP credentials again; sending resumes");
                }
            }
            Err(e) if e.kind == SendErrorKind::Relay(RelayFault::Auth) => {
                inner.refused(&e.message);
            }
            Err(_) => {
                // Not a verdict on the credentials; a probe that could not even connect
                // tries again after the same wait.
                if let Some(refusal) = inner.lock_refusal().as_mut()
                    && refusal.probing
                {
                    refusal.next_login = Instant::now() + refusal.backoff;
                }
            }
        }
        if let Admission::Probe(guard) = admission {
            if let Some(refusal) = inner.lock_refusal().as_mut() {
                refusal.probing = false;
            }
            guard.disarm();
        }
        opened
    }

    /// The relay refused a session: one fewer from now on, and the least recently used idle
    /// session beyond the new size is closed.
    async fn shrink(&self, reason: &str) {
        let inner = &self.inner;
        let surplus = {
            let mut capacity = inner.lock_capacity();
            capacity.good = 0;
            if capacity.current <= 1 {
                return;
            }
            capacity.current -= 1;
            if inner.permits.forget_permits(1) == 0 {
                capacity.debt += 1;
            }
            tracing::warn!(relay = %inner.server.label(), sessions = capacity.current,
                error = %reason, "the relay refused a session; using fewer");
            let mut idle = inner.lock_idle();
            (idle.len() > capacity.current as usize).then(|| idle.remove(0))
        };
        if let Some(idle) = surplus {
            quit(idle.session).await;
        }
    }

    /// Opens one session (connect, EHLO, STARTTLS or TLS, AUTH) and closes it without
    /// sending mail: what `sangha doctor` checks. Says what the session had.
    pub async fn probe(&self) -> Result<String, SendError> {
        let server = &self.inner.server;
        let session = server.connect().await?;
        let secured = match (server.tls, session.conn.is_encrypted()) {
            (_, false) => "not encrypted (smtp.tls = \"none\")",
            (TlsMode::Tls, true) => "TLS handshake and certificate accepted",
            (_, true) => "STARTTLS handshake and certificate accepted",
        };
        let login = if server.credentials.is_some() {
            "AUTH accepted"
        } else {
            "no login (smtp.username is empty)"
        };
        quit(session).await;
        Ok(format!(
            "{}: connected, EHLO answered, {secured}, {login}; no mail sent",
            server.label()
        ))
    }

    /// Sessions the relay lets us have now (`smtp.pool_size` until it refuses one).
    #[doc(hidden)]
    pub fn capacity(&self) -> u32 {
        self.inner.lock_capacity().current
    }

    /// Says `QUIT` to every idle session and closes it. Sessions in use finish their message
    /// and go back to the pool; the pool stays usable and reconnects when asked to send.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.inner.lock_idle());
        futures::future::join_all(idle.into_iter().map(|idle| quit(idle.session))).await;
    }
}

/// How the relay's certificate is checked, from `smtp.trust`, `smtp.ca_file`,
/// `smtp.certificate_sha256` and `smtp.danger_accept_invalid_certs`.
///
/// lettre 0.11 takes no rustls `ClientConfig` of ours, so a pin is checked by us after the
/// handshake ([`check_pin`]); for the handshake itself lettre is told to accept any chain and
/// name. It still checks that the server holds the key of the certificate it shows (the
/// handshake signature), and that certificate is the pinned one before anything but `EHLO`
/// is sent: Postfix's `fingerprint` security level.
fn tls_parameters(
    smtp: &SmtpConfig,
    host: &str,
    ca_file: Option<&Path>,
) -> anyhow::Result<TlsParameters> {
    let builtin = matches!(smtp.trust, TrustStore::Builtin | TrustStore::Both);
    let mut builder = TlsParameters::builder(host.to_owned()).certificate_store(if builtin {
        CertificateStore::WebpkiRoots
    } else {
        CertificateStore::None
    });
    if smtp.trust != TrustStore::Builtin {
        let found = rustls_native_certs::load_native_certs();
        let mut added = 0;
        for der in found.certs {
            // lettre refuses the whole set for one certificate it cannot use as a root, and a
            // system store may hold such odd ones: try each alone and skip those.
            let Ok(cert) = Certificate::from_der(der.to_vec()) else {
                continue;
            };
            let usable = TlsParameters::builder(host.to_owned())
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert.clone())
                .build()
                .is_ok();
            if usable {
                builder = builder.add_root_certificate(cert);
                added += 1;
            }
        }
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        if added == 0 && smtp.trust == TrustStore::System {
            anyhow::bail!(
                "smtp.trust = \"system\": no usable certificate in the system's trust store{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join("; "))
                }
            );
        }
        if !errors.is_empty() {
            tracing::warn!(errors = %errors.join("; "), "reading the system's trust store");
        }
        tracing::info!(
            certificates = added,
            "trusting the system's certificate store for SMTP"
        );
    }
    if let Some(path) = ca_file {
        let certificates = crate::config::read_ca_file(path)
            .map_err(|e| anyhow::anyhow!("invalid value for smtp.ca_file: {e}"))?;
        for der in certificates {
            let cert = Certificate::from_der(der).map_err(|e| {
                anyhow::anyhow!("invalid value for smtp.ca_file: {}: {e}", path.display())
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if smtp.certificate_sha256.is_some() {
        builder = builder
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    // Its warning is among SmtpConfig::warnings, logged when the pool is made.
    if smtp.danger_accept_invalid_certs {
        builder = builder
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    builder.build().map_err(|e| match ca_file {
        Some(path) => anyhow::anyhow!(
            "invalid value for smtp.ca_file: {}: {}",
            path.display(),
            error_chain(&e)
        ),
        None => anyhow::anyhow!("SMTP TLS settings: {}", error_chain(&e)),
    })
}

/// `smtp.host` as a name to connect to: an IPv6 literal may be written in brackets, as in a
/// URL (`[::1]`), and means the same as without them.
fn relay_host(host: &str) -> String {
    let host = host.trim();
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned()
}

/// The server's certificate must be the pinned one (`smtp.certificate_sha256`).
fn check_pin(
    pin: Option<CertificateSha256>,
    peer: Result<Vec<u8>, SmtpError>,
) -> Result<(), String> {
    let Some(pin) = pin else {
        return Ok(());
    };
    let der =
        peer.map_err(|e| format!("cannot read the server's certificate: {}", error_chain(&e)))?;
    let found = CertificateSha256::of_der(&der);
    if found == pin {
        Ok(())
    } else {
        Err(format!(
            "the server's certificate has SHA-256 {found}, not the {pin} that \
             smtp.certificate_sha256 asks for"
        ))
    }
}

/// Names the settings that fix a certificate the built-in roots do not know, or a port
/// that does not speak TLS from the first byte.
fn certificate_hint(error: String) -> String {
    if error.contains("InvalidContentType") {
        format!(
            "{error} (the server answered in plain text, not TLS: a submission port such as \
             587 or 25 starts in plain text and upgrades with STARTTLS; set smtp.tls = \
             \"starttls\", or use port 465 with \"tls\")"
        )
    } else if error.contains("invalid peer certificate") {
        format!(
            "{error} (a relay with a private CA or a self-signed certificate: set smtp.ca_file \
             to its CA's PEM file, or pin the certificate with smtp.certificate_sha256)"
        )
    } else {
        error
    }
}

impl Inner {
    fn lock_capacity(&self) -> MutexGuard<'_, Capacity> {
        self.capacity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message was accepted: after [`GROW_AFTER`] in a row a shrunk pool grows by one.
    fn accepted(&self) {
        let mut capacity = self.lock_capacity();
        if capacity.current >= self.pool_size {
            return;
        }
        capacity.good += 1;
        if capacity.good >= GROW_AFTER {
            capacity.good = 0;
            capacity.current += 1;
            if capacity.debt > 0 {
                capacity.debt -= 1;
            } else {
                self.permits.add_permits(1);
            }
            tracing::info!(relay = %self.server.label(), sessions = capacity.current,
                "the relay's answers are good; using one more session");
        }
    }

    fn lock_refusal(&self) -> MutexGuard<'_, Option<Refusal>> {
        self.refusal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a message through, makes it the probe of a refused relay, or holds it.
    fn admit(self: &Arc<Self>) -> Result<Admission, SendError> {
        let mut refusal = self.lock_refusal();
        let Some(r) = refusal.as_mut() else {
            return Ok(Admission::Open);
        };
        if r.probing || Instant::now() < r.next_login {
            return Err(held(r));
        }
        r.probing = true;
        Ok(Admission::Probe(ProbeGuard(Some(self.clone()))))
    }

    /// For a message that waited for another's first login: held if that login was refused.
    fn admit_again(&self) -> Result<(), SendError> {
        match self.lock_refusal().as_ref() {
            Some(r) => Err(held(r)),
            None => Ok(()),
        }
    }

    /// The relay refused our credentials: hold every message until the next login is due.
    /// Logged once per refusal, not per attempt.
    fn refused(&self, reason: &str) {
        self.proven.store(false, Ordering::Release);
        let mut refusal = self.lock_refusal();
        match refusal.as_mut() {
            Some(r) => {
                r.backoff = (r.backoff * 2).min(LOGIN_BACKOFF_MAX);
                r.next_login = Instant::now() + r.backoff;
                r.reason = reason.to_owned();
                tracing::debug!(relay = %self.server.label(), retry_in_s = r.backoff.as_secs(),
                    "the relay still refuses the SMTP credentials");
            }
            None => {
                let first = *self
                    .login_backoff
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                tracing::error!(relay = %self.server.label(), error = %reason,
                    retry_in_s = first.as_secs(),
                    "the relay refused the SMTP credentials: no mail goes out until a login \
                     succeeds; one login is tried at a time, less and less often. Check \
                     smtp.username and smtp.password, restart, then `sangha sends retry ID` \
                     for the deliveries that failed meanwhile");
                *refusal = Some(Refusal {
                    reason: reason.to_owned(),
                    next_login: Instant::now() + first,
                    backoff: first,
                    probing: false,
                });
            }
        }
    }

    /// Locks the idle stack. Nothing panics while holding it, and a `Vec` of sessions cannot be
    /// left half-changed, so a poisoned lock is still good to use.
    fn lock_idle(&self) -> MutexGuard<'_, Vec<IdleSession>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle session that is neither broken nor idle for too long;
    /// the ones passed over are dropped without a word (they are likely dead already).
    fn take_idle(&self) -> Option<Session> {
        let mut discarded = Vec::new();
        let found = {
            let mut idle = self.lock_idle();
            loop {
                match idle.pop() {
                    None => break None,
                    Some(idle)
                        if idle.since.elapsed() > IDLE_TIMEOUT
                            || idle.session.conn.has_broken() =>
                    {
                        discarded.push(idle);
                    }
                    Some(idle) => break Some(idle.session),
                }
            }
        };
        drop(discarded);
        found
    }

    fn put_back(&self, session: Session) {
        if session.conn.has_broken() {
            return;
        }
        self.lock_idle().push(IdleSession {
            session,
            since: Instant::now(),
        });
    }

    /// Removes the sessions idle for longer than [`IDLE_TIMEOUT`].
    fn take_expired(&self) -> Vec<Session> {
        let mut idle = self.lock_idle();
        let (expired, kept) = std::mem::take(&mut *idle)
            .into_iter()
            .partition::<Vec<_>, _>(|session| session.since.elapsed() > IDLE_TIMEOUT);
        *idle = kept;
        expired.into_iter().map(|idle| idle.session).collect()
    }
}

/// Closes sessions idle for too long in the background, while the pool lives. Without a
/// runtime (a pool built outside one) idle sessions are still checked when taken.
fn spawn_reaper(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool: Weak<Inner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(REAP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(inner) = pool.upgrade() else {
                return;
            };
            let expired = inner.take_expired();
            drop(inner);
            futures::future::join_all(expired.into_iter().map(quit)).await;
        }
    });
}

/// The answer to a message held back while the relay refuses our credentials.
fn held(refusal: &Refusal) -> SendError {
    let wait = refusal.next_login.saturating_duration_since(Instant::now());
    SendError {
        kind: SendErrorKind::Held,
        message: format!(
            "not tried: the relay refused the SMTP credentials ({}); next login in {} s",
            refusal.reason,
            wait.as_secs()
        ),
        reply_code: None,
    }
}

/// Ends a session politely, without waiting long for a server that may be gone.
async fn quit(mut session: Session) {
    let _ = tokio::time::timeout(HOUSEKEEPING_TIMEOUT, session.conn.quit()).await;
}

/// Clears the transaction after a clean rejection, so the session can be reused.
async fn reset(conn: &mut AsyncSmtpConnection) -> bool {
    matches!(
        tokio::time::timeout(HOUSEKEEPING_TIMEOUT, conn.command(Rset)).await,
        Ok(Ok(_))
    )
}

impl Server {
    fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens, secures and authenticates a session. Every failure here is `Transient`: a refused
    /// connection, a missing STARTTLS or rejected credentials say nothing about the message,
    /// and failing deliveries for good over a configuration mistake would lose them.
    async fn connect(&self) -> Result<Session, SendError> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err((fault, reason))) => Err(SendError {
                kind: SendErrorKind::Relay(fault),
                message: format!(
                    "cannot open an SMTP session with {}: {reason}",
                    self.label()
                ),
                reply_code: None,
            }),
            Err(_) => Err(SendError {
                kind: SendErrorKind::Relay(RelayFault::Connect),
                message: format!(
                    "cannot open an SMTP session with {}: no answer within {} s{}",
                    self.label(),
                    self.timeout.as_secs(),
                    if self.tls == TlsMode::Starttls {
                        " (a relay that speaks TLS from the first byte, as on port 465, waits \
                         silently for us to start it while smtp.tls = \"starttls\" waits for \
                         its greeting: if so, set smtp.tls = \"tls\")"
                    } else {
                        ""
                    }
                ),
                reply_code: None,
            }),
        }
    }

    async fn open(&self) -> Result<Session, (RelayFault, String)> {
        let connect = |reason: String| (RelayFault::Connect, reason);
        let tls = |reason: String| (RelayFault::Tls, reason);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| connect(format!("connect: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| connect(format!("set TCP_NODELAY: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match (self.tls, &self.tls_parameters) {
            (TlsMode::Tls, Some(parameters)) => {
                let stream = ImplicitTls::handshake(tcp, parameters.clone())
                    .await
                    .map_err(|e| tls(certificate_hint(format!("TLS: {}", error_chain(&e)))))?;
                check_pin(self.pin, stream.0.peer_certificate()).map_err(tls)?;
                Box::new(stream)
            }
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| connect(error_chain(&e)))?;
        if let (TlsMode::Starttls, Some(parameters)) = (self.tls, &self.tls_parameters) {
            if !conn.can_starttls() {
                return Err(tls("server does not offer STARTTLS".to_owned()));
            }
            conn.starttls(parameters.clone(), &self.hello)
                .await
                .map_err(|e| tls(certificate_hint(format!("STARTTLS: {}", error_chain(&e)))))?;
            check_pin(self.pin, conn.peer_certificate()).map_err(tls)?;
        }
        // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one of them:
        // ask again (EHLO may be repeated, RFC 5321 §4.1.4) and read the keywords ourselves.
        let ehlo = conn
            .command(Ehlo::new(self.hello.clone()))
            .await
            .map_err(|e| connect(format!("EHLO: {}", error_chain(&e))))?;
        let pipelining = ehlo.message().skip(1).any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        });
        if let Some(credentials) = &self.credentials {
            let info = conn.server_info();
            let offered = [Mechanism::Plain, Mechanism::Login]
                .into_iter()
                .any(|m| info.supports_auth_mechanism(m));
            if !offered && self.tls == TlsMode::None && conn.can_starttls() {
                return Err((
                    RelayFault::Auth,
                    "AUTH: the server offers no login before STARTTLS (smtp.tls = \"none\"): \
                     set smtp.tls = \"starttls\""
                        .to_owned(),
                ));
            }
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| (RelayFault::Auth, format!("AUTH: {}", error_chain(&e))))?;
        }
        Ok(Session {
            conn,
            pipelining,
            errors: 0,
        })
    }
}

/// The step of a mail transaction (RFC 5321 §3.3) a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    MailFrom,
    RcptTo,
    Data,
    /// The body and the final `.`, up to the server's verdict.
    EndOfData,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of data",
        }
    }
}

/// What a failure leaves of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// No reply (or `421`) to `MAIL FROM`: the session was dead before the message started.
    Stale,
    /// The server answered with a 4xx/5xx reply: the session is in step and can be reset.
    InStep,
    /// Anything else: the session's state is unknown and it is dropped.
    Broken,
}

struct Failure {
    error: SendError,
    fate: Fate,
}

/// One mail transaction on an open session, every step before `deadline`.
async fn transact(
    session: &mut Session,
    envelope: &Envelope,
    email: &[u8],
    deadline: Instant,
) -> Result<Response, Failure> {
    let conn = &mut session.conn;
    let parameters = mail_parameters(conn, envelope, email).map_err(|reason| Failure {
        error: SendError {
            kind: SendErrorKind::Permanent,
            message: reason.to_owned(),
            reply_code: None,
        },
        fate: Fate::InStep,
    })?;
    let mail = Mail::new(envelope.from().cloned(), parameters);
    if session.pipelining {
        envelope_pipelined(conn, mail, envelope, deadline).await?;
    } else {
        step(Stage::MailFrom, deadline, conn.command(mail)).await?;
        for recipient in envelope.to() {
            step(
                Stage::RcptTo,
                deadline,
                conn.command(Rcpt::new(recipient.clone(), Vec::new())),
            )
            .await?;
        }
        step(Stage::Data, deadline, conn.command(Data)).await?;
    }
    match std::str::from_utf8(email) {
        // The body and the closing dot in one write (lettre writes them in two).
        Ok(text) => step(Stage::EndOfData, deadline, conn.command(DataBody(text))).await,
        Err(_) => step(Stage::EndOfData, deadline, conn.message(email)).await,
    }
}

/// `MAIL FROM`, every `RCPT TO` and `DATA` in one write, then their replies in order
/// (RFC 2920). Every reply is read even after a refusal, so the session stays in step; the
/// first refusal is the one reported. A server that accepts `DATA` after refusing the sender
/// or a recipient breaks RFC 2920 §3.1, and its session is dropped rather than fed a body.
async fn envelope_pipelined(
    conn: &mut AsyncSmtpConnection,
    mail: Mail,
    envelope: &Envelope,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut commands = mail.to_string();
    for recipient in envelope.to() {
        commands.push_str(&Rcpt::new(recipient.clone(), Vec::new()).to_string());
    }
    commands.push_str(&Data.to_string());
    // `command` writes the whole group and reads the first reply, the one to `MAIL FROM`.
    let mut refused = match step(Stage::MailFrom, deadline, conn.command(commands)).await {
        Ok(_) => None,
        Err(failure) if failure.fate == Fate::InStep => Some(failure),
        Err(failure) => return Err(failure),
    };
    for _ in envelope.to() {
        match step(Stage::RcptTo, deadline, conn.read_response()).await {
            Ok(_) => {}
            Err(failure) if failure.fate == Fate::InStep => {
                refused.get_or_insert(failure);
            }
            Err(failure) => return Err(failure),
        }
    }
    match (
        step(Stage::Data, deadline, conn.read_response()).await,
        refused,
    ) {
        (Ok(_), None) => Ok(()),
        (Ok(_), Some(mut failure)) => {
            failure.fate = Fate::Broken;
            Err(failure)
        }
        (Err(failure), None) => Err(failure),
        (Err(data), Some(failure)) if data.fate == Fate::InStep => Err(failure),
        (Err(data), Some(_)) => Err(data),
    }
}

/// A message as the DATA command carries it: lines that start with a dot get another one
/// (RFC 5321 §4.5.2), then the closing `CRLF . CRLF`, exactly as lettre's own encoder does.
struct DataBody<'a>(&'a str);

impl std::fmt::Display for DataBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.starts_with('.') {
            f.write_str(".")?;
        }
        let mut lines = self.0.split("\r\n.");
        if let Some(first) = lines.next() {
            f.write_str(first)?;
        }
        for rest in lines {
            f.write_str("\r\n..")?;
            f.write_str(rest)?;
        }
        f.write_str("\r\n.\r\n")
    }
}

async fn step(
    stage: Stage,
    deadline: Instant,
    command: impl Future<Output = Result<Response, SmtpError>>,
) -> Result<Response, Failure> {
    match tokio::time::timeout_at(deadline, command).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(failure(stage, &error)),
        Err(_) => Err(Failure {
            error: SendError {
                kind: SendErrorKind::Transient,
                message: format!("no reply to {} in time{}", stage.name(), ambiguity(stage)),
                reply_code: None,
            },
            fate: if stage == Stage::MailFrom {
                Fate::Stale
            } else {
                Fate::Broken
            },
        }),
    }
}

/// Said of a failure at the end of data, where the server may have queued the message.
fn ambiguity(stage: Stage) -> &'static str {
    if stage == Stage::EndOfData {
        " (the server may have accepted the message; it was not sent again)"
    } else {
        ""
    }
}

/// Sorts an SMTP failure by what the server said (RFC 5321 §4.2.1 reply classes, RFC 3463
/// enhanced status codes). Anything that is not a 5xx reply — a 4xx, a lost connection, a
/// timeout — may succeed later.
fn failure(stage: Stage, error: &SmtpError) -> Failure {
    let code = error.status().map(u16::from);
    let kind = if error.is_permanent() {
        if stage != Stage::MailFrom && is_bad_recipient(error) {
            SendErrorKind::BadRecipient
        } else {
            SendErrorKind::Permanent
        }
    } else if is_greylisting(error) {
        SendErrorKind::Greylisted
    } else {
        SendErrorKind::Transient
    };
    let fate = match code {
        // 421: the server is closing the channel (RFC 5321 §3.8).
        None | Some(421) if stage == Stage::MailFrom => Fate::Stale,
        None | Some(421) => Fate::Broken,
        Some(_) => Fate::InStep,
    };
    let message = format!(
        "{} failed: {}{}",
        stage.name(),
        error_chain(error),
        if code.is_none() { ambiguity(stage) } else { "" }
    );
    Failure {
        error: SendError {
            kind,
            message,
            reply_code: code,
        },
        fate,
    }
}

/// A transient reply that greylists: enhanced status 4.7.1 ("try again later" from
/// greylisting filters such as rspamd's and Exim's), or "greylist" (also "graylist") in its
/// text, as postgrey's `450 4.2.0 ... Greylisted` says.
fn is_greylisting(error: &SmtpError) -> bool {
    if !error.is_transient() {
        return false;
    }
    let Some(text) = std::error::Error::source(error).map(|reply| reply.to_string()) else {
        return false;
    };
    let lower = text.to_ascii_lowercase();
    lower.split_whitespace().next() == Some("4.7.1")
        || lower.contains("greylist")
        || lower.contains("graylist")
}

/// A permanent reply whose enhanced status code (RFC 3463) is about the recipient's address:
/// 5.1.x, except 5.1.7 and 5.1.8, which are about the sender's.
fn is_bad_recipient(error: &SmtpError) -> bool {
    let Some(text) = std::error::Error::source(error).map(|reply| reply.to_string()) else {
        return false;
    };
    let Some(code) = text.split_whitespace().next() else {
        return false;
    };
    let mut parts = code.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    class == "5" && subject == "1" && detail.parse::<u16>().is_ok_and(|d| d != 7 && d != 8)
}

/// The `MAIL FROM` parameters this message needs (RFC 6531 SMTPUTF8, RFC 6152 8BITMIME), as
/// lettre's own `send` computes them.
fn mail_parameters(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<Vec<MailParameter>, &'static str> {
    let mut parameters = Vec::new();
    let server = conn.server_info();
    let non_ascii_address = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|address| !AsRef::<str>::as_ref(address).is_ascii());
    if non_ascii_address {
        if !server.supports_feature(Extension::SmtpUtfEight) {
            return Err(
                "the envelope has non-ASCII addresses but the server does not offer SMTPUTF8",
            );
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !email.is_ascii() {
        if !server.supports_feature(Extension::EightBitMime) {
            return Err("the message has 8-bit content but the server does not offer 8BITMIME");
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(parameters)
}

fn reply_text(response: &Response) -> String {
    format!(
        "{} {}",
        u16::from(response.code()),
        response.message().collect::<Vec<_>>().join(" ")
    )
}

/// An error and its causes on one line, without repeating a cause the error already shows
/// (lettre's errors print their source themselves, and some wrap an error of the same kind:
/// "Connection error: Connection error: invalid peer certificate").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

/// Implicit TLS (`smtp.tls = "tls"`, port 465) over a TCP stream we opened, so it has
/// `TCP_NODELAY` too. lettre only runs a TLS handshake on streams it wraps itself, through
/// `AsyncNetworkStream` (public, but deprecated as "not meant to be made public"), so the
/// handshake happens there and the encrypted stream is handed back to lettre as a plain
/// [`AsyncTokioStream`]. Should a lettre upgrade remove that type, fall back to
/// `AsyncSmtpConnection::connect_tokio1(.., Some(tls_parameters), ..)`, which cannot set
/// `TCP_NODELAY`.
#[allow(deprecated)]
#[derive(Debug)]
struct ImplicitTls(lettre::transport::smtp::client::AsyncNetworkStream);

#[allow(deprecated)]
impl ImplicitTls {
    async fn handshake(tcp: TcpStream, parameters: TlsParameters) -> Result<Self, SmtpError> {
        use lettre::transport::smtp::client::AsyncNetworkStream;
        let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
        stream.upgrade_tls(parameters).await?;
        Ok(ImplicitTls(stream))
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

/// `AsyncNetworkStream` speaks the `futures` I/O traits; lettre wants tokio's.
impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, unfilled) {
            Poll::Ready(Ok(read)) => {
                buf.advance(read);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        futures::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

#[cfg(test)]
mod tests {
    use super::relay_host;

    #[test]
    fn an_ipv6_relay_may_be_written_in_brackets() {
        assert_eq!(relay_host("[::1]"), "::1");
        assert_eq!(relay_host(" [2001:db8::25] "), "2001:db8::25");
        assert_eq!(relay_host("::1"), "::1");
        assert_eq!(relay_host("mail.example.org"), "mail.example.org");
    }
}
