//! A small, scriptable SMTP server for integration tests.
//!
//! [`TestSmtpServer`] listens on `127.0.0.1:<random port>` and records every
//! message it accepts, so tests can point Sangha's mailer (lettre 0.11) at it
//! and then inspect what was sent. Faults can be scripted at run time to test
//! retries, suppression and ambiguous deliveries:
//!
//! * [`TestSmtpServer::reject_recipient`]: answer `RCPT TO` for one address
//!   with a given reply (e.g. `550 5.1.1 No such user`).
//! * [`TestSmtpServer::push_data_reply`]: the next finished `DATA` gets the
//!   given reply instead of `250`; non-2xx replies are counted in
//!   [`TestSmtpServer::rejected_count`] and the message is not recorded.
//! * [`TestSmtpServer::push_drop_after_data`]: the next finished `DATA` is
//!   recorded in [`TestSmtpServer::ambiguous`] and the connection is closed
//!   without a reply (the server got the mail, the client never hears so).
//! * [`TestSmtpServer::push_drop_during_data`]: the next `DATA` is cut off:
//!   the server reads the first line of the message and closes the
//!   connection before the final `.` (nothing is recorded: the server never
//!   had the whole message).
//! * [`TestSmtpServer::push_silence_after_data`]: the next finished `DATA`
//!   is recorded in [`TestSmtpServer::ambiguous`] and never answered: the
//!   connection stays open, silent, until the client closes it.
//! * [`TestSmtpServer::set_greeting_reply`]: new connections get the given
//!   greeting (e.g. `421 4.3.2 Service not available`) and are closed.
//! * [`TestSmtpServer::set_random_faults`]: `MAIL FROM`, `RCPT TO` and the end
//!   of `DATA` fail at random with the given probability, half of the time
//!   with `421` (and the connection is closed), half with `451`. The random
//!   numbers come from a seeded xorshift generator, so a run that issues its
//!   commands in the same order meets the same faults.
//! * [`TestSmtpServer::pause_accepting`] / [`TestSmtpServer::resume_accepting`]:
//!   the server goes away (its port refuses connections, open connections are
//!   cut) and comes back on the same port.
//!
//! `DATA` outcomes pushed with `push_data_reply`, `push_drop_after_data`,
//! `push_drop_during_data` and `push_silence_after_data` share one FIFO queue; each `DATA` command takes the
//! outcome at the front when it is accepted (`354`), so they apply in the
//! order they were pushed. A scripted outcome (or a scripted recipient reply)
//! takes precedence over a random fault.
//!
//! # What it implements
//!
//! The subset of RFC 5321 that lettre's async client uses: `EHLO`/`HELO`,
//! `MAIL FROM` (with `SIZE=`, `BODY=7BIT|8BITMIME`, `SMTPUTF8` parameters),
//! `RCPT TO`, `DATA` (dot-unstuffing, exact bytes kept), `RSET`, `NOOP`,
//! `QUIT`, and RFC 4954 `AUTH PLAIN` (initial response or continuation) and
//! `AUTH LOGIN`, which are only offered when credentials were configured with
//! [`TestSmtpServer::with_credentials`] or the builder. With credentials
//! configured, `MAIL` before a successful `AUTH` gets `530`.
//!
//! `EHLO` advertises `PIPELINING` (RFC 2920, as Postfix does; the builder can
//! turn it off), `8BITMIME`, `SMTPUTF8`, `SIZE` and (with credentials)
//! `AUTH PLAIN LOGIN`. Client lines may end in CRLF or a bare LF; both count
//! as a line end everywhere, including in `DATA` (so `.\n` also ends the
//! data). Every reply the server sends ends in CRLF. Over-long command lines
//! get `500`, messages larger than the advertised `SIZE` get `552`, a client
//! may disconnect at any point, and nothing in a connection task panics.
//!
//! # What it does not implement
//!
//! TLS, when the builder is given [`TestTls`]: `STARTTLS` (RFC 3207; `AUTH` is then offered
//! and allowed only after it, as Postfix does) or implicit TLS from the first byte (RFC 8314).
//!
//! No `CHUNKING`/`BDAT`, `VRFY`, `EXPN`, `HELP`
//! or `DSN` parameters (all answered with `502` / `555`), no source-route
//! parsing, no address syntax validation, and no timeouts on idle clients.
//! Multi-line scripted replies are not supported.
//!
//! Dropping the [`TestSmtpServer`] stops the accept loop and closes every
//! connection it still has open.

#![allow(dead_code)] // Not every test binary uses every helper.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Name the server uses for itself in the greeting and in `EHLO` replies.
const SERVER_NAME: &str = "smtp.sangha.test";

/// Largest message accepted, advertised as `SIZE` in the `EHLO` reply.
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Longest command line accepted (RFC 5321 asks for 512; be generous).
const MAX_COMMAND_LINE: usize = 4096;

/// Reply to a `DATA` that finished and was accepted, unless one was scripted.
const DEFAULT_DATA_REPLY: &str = "250 2.0.0 Ok: queued";

/// How the server speaks TLS, with the certificate in the rustls configuration.
#[derive(Clone)]
pub enum TestTls {
    /// Plain at first; `STARTTLS` is offered and `AUTH` only after it.
    Starttls(Arc<tokio_rustls::rustls::ServerConfig>),
    /// TLS from the first byte (port 465 style).
    Implicit(Arc<tokio_rustls::rustls::ServerConfig>),
}

impl std::fmt::Debug for TestTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TestTls::Starttls(_) => "TestTls::Starttls",
            TestTls::Implicit(_) => "TestTls::Implicit",
        })
    }
}

/// A client connection's bytes: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxedIo = Box<dyn Io>;

/// A message that got through `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Reverse path from `MAIL FROM:<...>`, without the brackets (`""` for `<>`).
    pub mail_from: String,
    /// Accepted forward paths from `RCPT TO:<...>`, in order, without brackets.
    pub rcpt_to: Vec<String>,
    /// The message exactly as transmitted, dot-unstuffed, line endings as
    /// sent (CRLF for lettre), without the terminating `.` line.
    pub data: Vec<u8>,
    /// Which connection delivered it: 1 for the first connection accepted,
    /// 2 for the second, and so on.
    pub connection: u64,
}

impl ReceivedMessage {
    /// Parses [`Self::data`] as an RFC 5322 message; panics if it can't.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .unwrap_or_else(|| {
                panic!(
                    "received message is not parseable: {:?}",
                    String::from_utf8_lossy(&self.data)
                )
            })
    }

    /// The raw data as (lossy) UTF-8, handy for `contains` assertions.
    pub fn data_lossy(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// What happens to the next message whose `DATA` finishes (scripted).
#[derive(Debug)]
enum DataOutcome {
    /// Answer with this reply line; non-2xx means the message is rejected.
    Reply(String),
    /// Record the message as ambiguous and close without replying.
    DropConnection,
    /// Close the connection while the message is still coming in.
    DropDuringData,
    /// Record the message as ambiguous and never answer.
    Silence,
}

/// A fault injected at random by [`TestSmtpServer::set_random_faults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `421`: the server is closing the transmission channel (RFC 5321 §3.8).
    Closing,
    /// `451`: local error in processing; try again later.
    TryLater,
}

impl Fault {
    fn reply(self) -> &'static str {
        match self {
            Fault::Closing => "421 4.3.2 smtp.sangha.test closing connection (injected fault)",
            Fault::TryLater => "451 4.3.0 Temporary local problem (injected fault)",
        }
    }
}

/// The random fault mode: a probability and a seeded xorshift64* generator.
#[derive(Debug)]
struct RandomFaults {
    probability: f64,
    rng: u64,
}

impl RandomFaults {
    fn new(probability: f64, seed: u64) -> Self {
        // xorshift must never be in the all-zero state.
        let rng = if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        };
        Self { probability, rng }
    }

    /// The next number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn roll(&mut self) -> Option<Fault> {
        if self.next_unit() >= self.probability {
            return None;
        }
        Some(if self.next_unit() < 0.5 {
            Fault::Closing
        } else {
            Fault::TryLater
        })
    }
}

/// Everything the connection tasks share with the test, behind one mutex.
#[derive(Debug, Default)]
struct Inner {
    /// Number of connections accepted so far (also the last connection id).
    connections: u64,
    /// Messages accepted with a 2xx reply.
    messages: Vec<ReceivedMessage>,
    /// Messages received whose connection was then dropped without a reply.
    ambiguous: Vec<ReceivedMessage>,
    /// Messages whose `DATA` got a non-2xx reply.
    rejected: usize,
    /// Lower-cased recipient address -> full reply line for its `RCPT TO`.
    recipient_replies: HashMap<String, String>,
    /// Scripted outcomes for the next finished `DATA`s, consumed in order.
    data_outcomes: VecDeque<DataOutcome>,
    /// When set, new connections get this greeting and are closed.
    greeting_reply: Option<String>,
    /// Lower-cased recipient address -> `RCPT TO` commands naming it.
    rcpt_attempts: HashMap<String, usize>,
    /// When set, commands fail at random.
    random_faults: Option<RandomFaults>,
    /// Faults injected at random so far.
    random_faults_injected: usize,
    /// Connections closed by [`DataOutcome::DropDuringData`].
    dropped_during_data: usize,
    /// Commands that had already arrived when the previous one was read,
    /// while `PIPELINING` was not offered: a client breaking RFC 2920.
    commands_ahead_of_reply: usize,
    /// Logins tried (`AUTH` exchanges that got as far as checking the credentials).
    logins: usize,
    /// Of those, refused with `535`.
    refused_logins: usize,
    /// Replaces the configured password (see [`TestSmtpServer::set_password`]).
    password: Option<String>,
    /// `QUIT` commands received.
    quits: usize,
    /// See [`TestSmtpServerBuilder::connection_limit`].
    connection_limit: Option<usize>,
    /// Connections open right now, and the most there ever were at once.
    open_connections: usize,
    most_open_connections: usize,
    /// Connections refused for the connection limit.
    refused_connections: usize,
}

impl Inner {
    /// Draws a random fault, when the random mode is on.
    fn roll_fault(&mut self) -> Option<Fault> {
        let fault = self.random_faults.as_mut()?.roll()?;
        self.random_faults_injected += 1;
        Some(fault)
    }
}

#[derive(Debug)]
struct State {
    /// `(username, password)`; when set, `AUTH` is offered and required.
    credentials: Option<(String, String)>,
    /// `PIPELINING` is not offered: a client must wait for each reply.
    without_pipelining: bool,
    /// Replies to `MAIL` and `RCPT` are held back and sent with the reply to
    /// `DATA` (RFC 2920 lets a server batch its replies): only a client that
    /// pipelines gets through; one that waits for each reply times out.
    defer_envelope_replies: bool,
    /// How long each finished `DATA` waits before it is recorded and answered.
    message_delay: Duration,
    tls: Option<TestTls>,
    inner: Mutex<Inner>,
    /// Woken whenever a message is recorded (accepted, rejected or ambiguous).
    changed: Notify,
}

impl State {
    /// Locks the shared state. A panic elsewhere while holding the lock must
    /// not hide the test's real failure behind a `PoisonError`, so poisoning
    /// is ignored: the data is plain bookkeeping and stays consistent.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Builder for a [`TestSmtpServer`] with non-default settings.
#[derive(Debug, Default)]
pub struct TestSmtpServerBuilder {
    credentials: Option<(String, String)>,
    without_pipelining: bool,
    defer_envelope_replies: bool,
    message_delay: Duration,
    tls: Option<TestTls>,
    connection_limit: Option<usize>,
}

impl TestSmtpServerBuilder {
    /// Keep at most `limit` connections open at once; one more gets `421 4.7.0 too many
    /// connections` and is closed, as Postfix does with `smtpd_client_connection_count_limit`.
    pub fn connection_limit(mut self, limit: usize) -> Self {
        self.connection_limit = Some(limit);
        self
    }

    /// Speak TLS: by `STARTTLS` or from the first byte.
    pub fn tls(mut self, tls: TestTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Offer `AUTH PLAIN LOGIN` and require a successful `AUTH` with these
    /// credentials before `MAIL`.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// Do not offer `PIPELINING`, and count commands a client sends before
    /// the reply to the previous one ([`TestSmtpServer::commands_ahead_of_reply`]).
    pub fn without_pipelining(mut self) -> Self {
        self.without_pipelining = true;
        self
    }

    /// Hold the replies to `MAIL` and `RCPT` back until `DATA` arrives.
    pub fn defer_envelope_replies(mut self) -> Self {
        self.defer_envelope_replies = true;
        self
    }

    /// Take `delay` over each message: the reply to a finished `DATA` comes that long after
    /// its last line, as from a relay that scans or forwards before it answers.
    pub fn delay_each_message(mut self, delay: Duration) -> Self {
        self.message_delay = delay;
        self
    }

    /// Binds `127.0.0.1:0` and starts accepting connections.
    pub async fn start(self) -> TestSmtpServer {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("test SMTP server: failed to bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("test SMTP server: no local address");
        let state = Arc::new(State {
            credentials: self.credentials,
            without_pipelining: self.without_pipelining,
            defer_envelope_replies: self.defer_envelope_replies,
            message_delay: self.message_delay,
            tls: self.tls,
            inner: Mutex::new(Inner {
                connection_limit: self.connection_limit,
                ..Inner::default()
            }),
            changed: Notify::new(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        TestSmtpServer {
            addr,
            state,
            accept_task: Mutex::new(Some(accept_task)),
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so the port of a paused server can
/// be bound again while connections it closed linger in `TIME_WAIT`.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A running test SMTP server; see the module documentation.
#[derive(Debug)]
pub struct TestSmtpServer {
    addr: SocketAddr,
    state: Arc<State>,
    /// The accept loop; `None` while paused.
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for TestSmtpServer {
    fn drop(&mut self) {
        // The accept task owns the listener and the JoinSet of connection
        // tasks, so aborting it closes the port and every open connection.
        let task = self
            .accept_task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

impl TestSmtpServer {
    /// Logins tried so far, and how many of them were refused.
    pub fn logins(&self) -> (usize, usize) {
        let inner = self.state.lock();
        (inner.logins, inner.refused_logins)
    }

    /// From now on `AUTH` takes this password (for the configured username), as when the
    /// owner changes it at the provider.
    pub fn set_password(&self, password: &str) {
        self.state.lock().password = Some(password.to_owned());
    }

    /// Changes the connection limit (see [`TestSmtpServerBuilder::connection_limit`]) and
    /// forgets the most connections seen open at once.
    pub fn set_connection_limit(&self, limit: Option<usize>) {
        let mut inner = self.state.lock();
        inner.connection_limit = limit;
        inner.most_open_connections = inner.open_connections;
    }

    /// Connections refused for the connection limit, and the most open at once.
    pub fn connection_limit_stats(&self) -> (usize, usize) {
        let inner = self.state.lock();
        (inner.refused_connections, inner.most_open_connections)
    }

    /// `QUIT` commands received so far.
    pub fn quits(&self) -> usize {
        self.state.lock().quits
    }

    /// Starts a server without authentication.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// Starts a server that offers and requires `AUTH` with these credentials.
    pub async fn with_credentials(
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self::builder()
            .credentials(username, password)
            .start()
            .await
    }

    pub fn builder() -> TestSmtpServerBuilder {
        TestSmtpServerBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Commands received ahead of the previous reply on a server built
    /// [`TestSmtpServerBuilder::without_pipelining`].
    pub fn commands_ahead_of_reply(&self) -> usize {
        self.state.lock().commands_ahead_of_reply
    }

    /// All messages accepted (2xx after `DATA`) so far, in arrival order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.state.lock().messages.clone()
    }

    /// Messages the server received but never acknowledged because a
    /// [`Self::push_drop_after_data`] closed the connection first.
    pub fn ambiguous(&self) -> Vec<ReceivedMessage> {
        self.state.lock().ambiguous.clone()
    }

    /// Number of messages whose `DATA` got a non-2xx reply (scripted with
    /// [`Self::push_data_reply`], a random fault, or too large). Recipient rejections at
    /// `RCPT TO` are not counted here.
    pub fn rejected_count(&self) -> usize {
        self.state.lock().rejected
    }

    /// Number of TCP connections accepted so far (including ones refused by
    /// a scripted greeting).
    pub fn connections(&self) -> u64 {
        self.state.lock().connections
    }

    /// Waits until at least `n` messages were accepted and returns them all.
    ///
    /// # Panics
    ///
    /// With "expected N messages within T, got M" if they don't arrive in time.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for a wake-up *before* checking, so a message recorded
            // between the check and the await is not missed.
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let inner = self.state.lock();
                if inner.messages.len() >= n {
                    return inner.messages.clone();
                }
                panic!(
                    "expected {n} messages within {timeout:?}, got {} \
                     ({} ambiguous, {} rejected at DATA, {} connections)",
                    inner.messages.len(),
                    inner.ambiguous.len(),
                    inner.rejected,
                    inner.connections,
                );
            }
        }
    }

    /// Makes `RCPT TO` for `email` (matched case-insensitively) answer with
    /// `reply`, a full reply line such as `"550 5.1.1 No such user"` or
    /// `"450 4.2.1 Mailbox busy"`. Applies until cleared.
    ///
    /// # Panics
    ///
    /// If `reply` is not a single 4xx or 5xx reply line.
    pub fn reject_recipient(&self, email: &str, reply: &str) {
        let reply = normalize_reply(reply);
        assert!(
            matches!(reply.as_bytes()[0], b'4' | b'5'),
            "reject_recipient needs a 4xx or 5xx reply, got {reply:?}"
        );
        self.state
            .lock()
            .recipient_replies
            .insert(email.to_lowercase(), reply);
    }

    /// Undoes [`Self::reject_recipient`] for `email`.
    pub fn clear_recipient_rejection(&self, email: &str) {
        self.state
            .lock()
            .recipient_replies
            .remove(&email.to_lowercase());
    }

    /// Queues `reply` (e.g. `"451 4.3.0 Try again later"`) as the answer to
    /// the next message whose `DATA` finishes, instead of
    /// `250 2.0.0 Ok: queued`. With a non-2xx reply the message is not
    /// recorded in [`Self::messages`] but counted in [`Self::rejected_count`].
    ///
    /// # Panics
    ///
    /// If `reply` is not a single reply line starting with a 2xx-5xx code.
    pub fn push_data_reply(&self, reply: &str) {
        let reply = normalize_reply(reply);
        self.state
            .lock()
            .data_outcomes
            .push_back(DataOutcome::Reply(reply));
    }

    /// Makes the next message whose `DATA` finishes be recorded in
    /// [`Self::ambiguous`], then closes its connection without a reply.
    pub fn push_drop_after_data(&self) {
        self.state
            .lock()
            .data_outcomes
            .push_back(DataOutcome::DropConnection);
    }

    /// Makes the next `DATA` command be cut off: after `354` the server
    /// reads the first line of the message and closes the connection before
    /// the final `.`. Nothing is recorded (see [`Self::dropped_during_data`]).
    pub fn push_drop_during_data(&self) {
        self.state
            .lock()
            .data_outcomes
            .push_back(DataOutcome::DropDuringData);
    }

    /// Makes the next message whose `DATA` finishes be recorded in
    /// [`Self::ambiguous`] and never answered (a server hanging after the
    /// final `.`); the connection stays open until the client closes it.
    pub fn push_silence_after_data(&self) {
        self.state
            .lock()
            .data_outcomes
            .push_back(DataOutcome::Silence);
    }

    /// Connections cut off by [`Self::push_drop_during_data`] so far.
    pub fn dropped_during_data(&self) -> usize {
        self.state.lock().dropped_during_data
    }

    /// From now on `MAIL FROM`, `RCPT TO` and the end of `DATA` each fail
    /// with `probability` (0 to 1): half of the faults are `421` followed by
    /// closing the connection, half `451`. A message that meets a fault at
    /// the end of `DATA` is not recorded (it counts in
    /// [`Self::rejected_count`]). `seed` seeds the xorshift generator, so the
    /// same sequence of commands meets the same faults. A probability of 0
    /// turns the mode off.
    ///
    /// # Panics
    ///
    /// If `probability` is not within 0 to 1.
    pub fn set_random_faults(&self, probability: f64, seed: u64) {
        assert!(
            (0.0..=1.0).contains(&probability),
            "a probability is within 0 to 1, got {probability}"
        );
        self.state.lock().random_faults =
            (probability > 0.0).then(|| RandomFaults::new(probability, seed));
    }

    /// Faults injected by [`Self::set_random_faults`] so far.
    pub fn random_faults_injected(&self) -> usize {
        self.state.lock().random_faults_injected
    }

    /// How many `RCPT TO` commands named `email` (case-insensitively),
    /// whatever the answer.
    pub fn rcpt_attempts(&self, email: &str) -> usize {
        self.state
            .lock()
            .rcpt_attempts
            .get(&email.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// The server goes away: the listening socket is closed, so connecting
    /// is refused, and every open connection is cut (a message being
    /// answered at that moment may be recorded without the client hearing
    /// so). Returns once the port is closed. Does nothing if already paused.
    pub async fn pause_accepting(&self) {
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port after [`Self::pause_accepting`].
    /// Connection ids keep counting from where they were.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound again within a few seconds (another
    /// program took it meanwhile).
    pub async fn resume_accepting(&self) {
        if self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match listen(self.addr) {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!(
                    "test SMTP server: cannot listen on {} again: {e}",
                    self.addr
                ),
            }
        };
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&self.state)));
        *self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// When `Some`, new connections are greeted with that reply line (e.g.
    /// `"421 4.3.2 Service not available"`) and closed at once. `None`
    /// restores the normal `220` greeting.
    ///
    /// # Panics
    ///
    /// If the reply is not a single reply line starting with a 2xx-5xx code.
    pub fn set_greeting_reply(&self, reply: Option<String>) {
        let reply = reply.map(|reply| normalize_reply(&reply));
        self.state.lock().greeting_reply = reply;
    }
}

/// Checks that `reply` is one reply line starting with a code from 200 to
/// 599 (followed by a space or nothing), and strips any trailing CR/LF.
fn normalize_reply(reply: &str) -> String {
    let reply = reply.trim_end_matches(['\r', '\n']);
    let bytes = reply.as_bytes();
    let valid = bytes.len() >= 3
        && (b'2'..=b'5').contains(&bytes[0])
        && bytes[1..3].iter().all(u8::is_ascii_digit)
        && (bytes.len() == 3 || bytes[3] == b' ')
        && !reply.contains(['\r', '\n']);
    assert!(
        valid,
        "invalid scripted SMTP reply {reply:?}: expected one line like \"451 4.3.0 Try again later\""
    );
    reply.to_owned()
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Owned here so that aborting this task (on server drop) also aborts
    // every connection task.
    let mut sessions = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set does not grow forever.
        while sessions.try_join_next().is_some() {}

        // Transient accept errors (e.g. a client that reset before we
        // accepted) must not stop the server.
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let (id, over_limit) = {
            let mut inner = state.lock();
            inner.connections += 1;
            let over = inner
                .connection_limit
                .is_some_and(|limit| inner.open_connections >= limit);
            if over {
                inner.refused_connections += 1;
            } else {
                inner.open_connections += 1;
                inner.most_open_connections =
                    inner.most_open_connections.max(inner.open_connections);
            }
            (inner.connections, over)
        };
        if over_limit {
            sessions.spawn(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"421 4.7.0 Error: too many connections from 127.0.0.1\r\n")
                    .await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        let state = Arc::clone(&state);
        // An I/O error (or a refused TLS handshake) just ends that connection; there is nobody
        // to tell.
        sessions.spawn(async move {
            let closed = OpenConnection(Arc::clone(&state));
            let _ = stream.set_nodelay(true);
            let io: BoxedIo = match &state.tls {
                Some(TestTls::Implicit(config)) => {
                    match tokio_rustls::TlsAcceptor::from(Arc::clone(config))
                        .accept(stream)
                        .await
                    {
                        Ok(tls) => Box::new(tls),
                        Err(_) => return,
                    }
                }
                _ => Box::new(stream),
            };
            let encrypted = matches!(state.tls, Some(TestTls::Implicit(_)));
            let mut session = Session::new(id, io, Arc::clone(&state));
            session.encrypted = encrypted;
            let _ = session.run().await;
            drop(closed);
        });
    }
}

/// Counts a connection as open until it is dropped (the session ended or was aborted).
struct OpenConnection(Arc<State>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.open_connections = inner.open_connections.saturating_sub(1);
    }
}

/// Result of reading one line from the client.
enum LineRead {
    /// A complete line, including its `\n` (and `\r` if sent), is in the buffer.
    Line,
    /// The line was longer than allowed; it was read and discarded.
    TooLong,
    /// The client closed the connection (a partial last line is discarded).
    Eof,
}

/// Reads one line ending in `\n` into `buf` (appending), keeping at most
/// `max` bytes; longer lines are consumed up to their end and reported as
/// [`LineRead::TooLong`] with `buf` left as it was.
async fn read_line(
    reader: &mut BufReader<ReadHalf<BoxedIo>>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    let start = buf.len();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            buf.truncate(start);
            return Ok(LineRead::Eof);
        }
        let (chunk, line_ends) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (&available[..=newline], true),
            None => (available, false),
        };
        let used = chunk.len();
        if !too_long {
            if buf.len() - start + used > max {
                too_long = true;
                buf.truncate(start);
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if line_ends {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Strips a trailing `\n` or `\r\n`.
fn trim_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// How an `AUTH` exchange ended.
enum AuthEnd {
    Success,
    BadCredentials,
    Cancelled,
    Malformed,
    Disconnected,
}

/// Result of reading the body after `354`.
enum DataRead {
    Complete(Vec<u8>),
    TooBig,
    Disconnected,
}

/// How a finished `DATA` is answered.
enum DataReply {
    Line(String),
    Fault(Fault),
    Drop,
    Silence,
}

/// The envelope of the mail transaction in progress.
struct Envelope {
    mail_from: String,
    rcpt_to: Vec<String>,
}

/// One client connection.
struct Session {
    id: u64,
    state: Arc<State>,
    reader: BufReader<ReadHalf<BoxedIo>>,
    writer: WriteHalf<BoxedIo>,
    /// TLS is on (implicit, or after `STARTTLS`).
    encrypted: bool,
    /// `HELO` or `EHLO` was received.
    greeted: bool,
    /// The greeting was `EHLO`, so extensions (`AUTH`) may be used.
    extended: bool,
    authenticated: bool,
    envelope: Option<Envelope>,
    /// The command being answered is `MAIL` or `RCPT` and replies are deferred.
    holding: bool,
    /// Replies held back by [`State::defer_envelope_replies`].
    held: String,
}

impl Session {
    fn new(id: u64, stream: BoxedIo, state: Arc<State>) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Session {
            id,
            state,
            reader: BufReader::new(reader),
            writer,
            encrypted: false,
            greeted: false,
            extended: false,
            authenticated: false,
            envelope: None,
            holding: false,
            held: String::new(),
        }
    }

    async fn run(mut self) -> io::Result<()> {
        let greeting = self.state.lock().greeting_reply.clone();
        if let Some(reply) = greeting {
            self.reply(&reply).await?;
            return self.writer.shutdown().await;
        }
        self.reply(&format!("220 {SERVER_NAME} ESMTP Sangha test server"))
            .await?;

        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut self.reader, &mut line, MAX_COMMAND_LINE).await? {
                LineRead::Eof => return Ok(()),
                LineRead::TooLong => {
                    self.reply("500 5.5.2 Line too long").await?;
                    continue;
                }
                LineRead::Line => {}
            }
            if self.state.without_pipelining && !self.reader.buffer().is_empty() {
                self.state.lock().commands_ahead_of_reply += 1;
            }
            let command = String::from_utf8_lossy(trim_line_ending(&line)).into_owned();
            if self.handle_command(&command).await? == Flow::Close {
                return Ok(());
            }
        }
    }

    /// Sends one reply line, terminated with CRLF.
    async fn reply(&mut self, line: &str) -> io::Result<()> {
        self.reply_lines(&[line.to_owned()]).await
    }

    /// Sends a (possibly multi-line) reply: `lines` are the texts after the
    /// code, the first of which must start with the code, e.g. `["250 a",
    /// "b"]` is sent as `250-a\r\n250 b\r\n`.
    async fn reply_lines(&mut self, lines: &[String]) -> io::Result<()> {
        let code = &lines[0][..3];
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let text = if i == 0 {
                line[3..].trim_start()
            } else {
                line.as_str()
            };
            let text = text.trim_end_matches(['\r', '\n']);
            let separator = if i + 1 == lines.len() { ' ' } else { '-' };
            // Always `code SP text`, even with empty text: RFC 4954 wants
            // an empty AUTH challenge as "334 ".
            out.push_str(code);
            out.push(separator);
            out.push_str(text);
            out.push_str("\r\n");
        }
        if self.holding {
            self.held.push_str(&out);
            return Ok(());
        }
        if !self.held.is_empty() {
            out.insert_str(0, &std::mem::take(&mut self.held));
        }
        self.writer.write_all(out.as_bytes()).await?;
        self.writer.flush().await
    }

    async fn handle_command(&mut self, command: &str) -> io::Result<Flow> {
        let command = command.trim();
        let (verb, args) = match command.split_once(' ') {
            Some((verb, args)) => (verb, args.trim()),
            None => (command, ""),
        };
        let verb = verb.to_ascii_uppercase();
        self.holding = self.state.defer_envelope_replies && (verb == "MAIL" || verb == "RCPT");
        match verb.as_str() {
            "EHLO" => self.handle_hello(args, true).await,
            "HELO" => self.handle_hello(args, false).await,
            "AUTH" => self.handle_auth(args).await,
            "STARTTLS" => self.handle_starttls().await,
            "MAIL" => self.handle_mail(args).await,
            "RCPT" => self.handle_rcpt(args).await,
            "DATA" => self.handle_data(args).await,
            "RSET" => {
                self.envelope = None;
                self.ok("250 2.0.0 Ok").await
            }
            "NOOP" => self.ok("250 2.0.0 Ok").await,
            "QUIT" => {
                self.state.lock().quits += 1;
                self.reply("221 2.0.0 Bye").await?;
                let _ = self.writer.shutdown().await;
                Ok(Flow::Close)
            }
            "" => self.ok("500 5.5.2 Syntax error: empty command").await,
            _ => self.ok("502 5.5.2 Command not recognized").await,
        }
    }

    /// Sends `reply` and continues the session.
    async fn ok(&mut self, reply: &str) -> io::Result<Flow> {
        self.reply(reply).await?;
        Ok(Flow::Continue)
    }

    async fn handle_hello(&mut self, domain: &str, extended: bool) -> io::Result<Flow> {
        if domain.is_empty() {
            let verb = if extended { "EHLO" } else { "HELO" };
            return self.ok(&format!("501 5.5.4 Syntax: {verb} hostname")).await;
        }
        // A new greeting aborts any transaction in progress (RFC 5321 4.1.4).
        self.envelope = None;
        self.greeted = true;
        self.extended = extended;
        if !extended {
            return self.ok(&format!("250 {SERVER_NAME}")).await;
        }
        let mut lines = vec![format!("250 {SERVER_NAME} greets {domain}")];
        if !self.state.without_pipelining {
            lines.push("PIPELINING".to_owned());
        }
        lines.extend([
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            format!("SIZE {MAX_MESSAGE_SIZE}"),
        ]);
        if matches!(self.state.tls, Some(TestTls::Starttls(_))) && !self.encrypted {
            lines.push("STARTTLS".to_owned());
        }
        if self.state.credentials.is_some() && self.auth_allowed() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        self.reply_lines(&lines).await?;
        Ok(Flow::Continue)
    }

    /// With `STARTTLS` offered, credentials are taken only over TLS (RFC 3207 §4).
    fn auth_allowed(&self) -> bool {
        self.encrypted || !matches!(self.state.tls, Some(TestTls::Starttls(_)))
    }

    /// `STARTTLS` (RFC 3207): `220`, then the TLS handshake on the same connection, and the
    /// session starts over (a new `EHLO`, no authentication carried across).
    async fn handle_starttls(&mut self) -> io::Result<Flow> {
        let Some(TestTls::Starttls(config)) = self.state.tls.clone() else {
            return self.ok("502 5.5.1 STARTTLS not available").await;
        };
        if self.encrypted {
            return self.ok("503 5.5.1 TLS already active").await;
        }
        self.reply("220 2.0.0 Ready to start TLS").await?;
        let placeholder: BoxedIo = Box::new(tokio::io::duplex(1).0);
        let (placeholder_reader, placeholder_writer) = tokio::io::split(placeholder);
        let reader = std::mem::replace(&mut self.reader, BufReader::new(placeholder_reader));
        let writer = std::mem::replace(&mut self.writer, placeholder_writer);
        let plain = reader.into_inner().unsplit(writer);
        let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(plain).await else {
            return Ok(Flow::Close);
        };
        let (reader, writer) = tokio::io::split(Box::new(tls) as BoxedIo);
        self.reader = BufReader::new(reader);
        self.writer = writer;
        self.encrypted = true;
        self.greeted = false;
        self.extended = false;
        self.authenticated = false;
        self.envelope = None;
        Ok(Flow::Continue)
    }

    async fn handle_auth(&mut self, args: &str) -> io::Result<Flow> {
        if self.state.credentials.is_none() {
            return self.ok("502 5.5.1 AUTH not available").await;
        }
        if !self.extended {
            return self.ok("503 5.5.1 Send EHLO first").await;
        }
        if !self.auth_allowed() {
            return self
                .ok("538 5.7.11 Encryption required for requested authentication mechanism")
                .await;
        }
        if self.authenticated {
            return self.ok("503 5.5.1 Already authenticated").await;
        }
        if self.envelope.is_some() {
            return self
                .ok("503 5.5.1 AUTH not allowed during a mail transaction")
                .await;
        }
        let mut words = args.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial_response = words.next();
        let end = match mechanism.as_str() {
            "PLAIN" => self.auth_plain(initial_response).await?,
            "LOGIN" => self.auth_login(initial_response).await?,
            "" => return self.ok("501 5.5.4 Syntax: AUTH mechanism").await,
            _ => return self.ok("504 5.5.4 Unrecognized authentication type").await,
        };
        match end {
            AuthEnd::Success => {
                self.authenticated = true;
                self.ok("235 2.7.0 Authentication successful").await
            }
            AuthEnd::BadCredentials => {
                self.ok("535 5.7.8 Authentication credentials invalid")
                    .await
            }
            AuthEnd::Cancelled => self.ok("501 5.7.0 Authentication cancelled").await,
            AuthEnd::Malformed => self.ok("501 5.5.2 Cannot decode response").await,
            AuthEnd::Disconnected => Ok(Flow::Close),
        }
    }

    /// `AUTH PLAIN`: one response `authzid \0 authcid \0 password`.
    async fn auth_plain(&mut self, initial_response: Option<&str>) -> io::Result<AuthEnd> {
        let response = match self.auth_response(initial_response, "").await? {
            Ok(response) => response,
            Err(end) => return Ok(end),
        };
        let mut fields = response.split(|&b| b == 0);
        let (Some(_authzid), Some(username), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Ok(AuthEnd::Malformed);
        };
        Ok(self.check_credentials(username, password))
    }

    /// `AUTH LOGIN`: prompts `Username:` (unless given up front), then
    /// `Password:`.
    async fn auth_login(&mut self, initial_response: Option<&str>) -> io::Result<AuthEnd> {
        let username = match self.auth_response(initial_response, "Username:").await? {
            Ok(username) => username,
            Err(end) => return Ok(end),
        };
        let password = match self.auth_response(None, "Password:").await? {
            Ok(password) => password,
            Err(end) => return Ok(end),
        };
        Ok(self.check_credentials(&username, &password))
    }

    /// Gets one base64 SASL response: decodes `initial` if the client sent
    /// one with the `AUTH` command, otherwise sends `334 base64(prompt)` and
    /// reads the client's answer line.
    async fn auth_response(
        &mut self,
        initial: Option<&str>,
        prompt: &str,
    ) -> io::Result<Result<Vec<u8>, AuthEnd>> {
        let encoded = match initial {
            Some(initial) => initial.to_owned(),
            None => {
                self.reply(&format!("334 {}", BASE64.encode(prompt)))
                    .await?;
                let mut line = Vec::new();
                match read_line(&mut self.reader, &mut line, MAX_COMMAND_LINE).await? {
                    LineRead::Eof => return Ok(Err(AuthEnd::Disconnected)),
                    LineRead::TooLong => return Ok(Err(AuthEnd::Malformed)),
                    LineRead::Line => {}
                }
                String::from_utf8_lossy(trim_line_ending(&line))
                    .trim()
                    .to_owned()
            }
        };
        Ok(match encoded.as_str() {
            "*" => Err(AuthEnd::Cancelled),
            // RFC 4954: "=" stands for an empty initial response.
            "=" => Ok(Vec::new()),
            _ => BASE64.decode(&encoded).map_err(|_| AuthEnd::Malformed),
        })
    }

    fn check_credentials(&self, username: &[u8], password: &[u8]) -> AuthEnd {
        let mut inner = self.state.lock();
        inner.logins += 1;
        let expected = match (&inner.password, &self.state.credentials) {
            (Some(changed), Some((user, _))) => Some((user.as_bytes(), changed.as_bytes())),
            (None, Some((user, pass))) => Some((user.as_bytes(), pass.as_bytes())),
            (_, None) => None,
        };
        if expected == Some((username, password)) {
            AuthEnd::Success
        } else {
            inner.refused_logins += 1;
            AuthEnd::BadCredentials
        }
    }

    async fn handle_mail(&mut self, args: &str) -> io::Result<Flow> {
        if !self.greeted {
            return self.ok("503 5.5.1 Send EHLO or HELO first").await;
        }
        if self.state.credentials.is_some() && !self.authenticated {
            return self.ok("530 5.7.0 Authentication required").await;
        }
        if self.envelope.is_some() {
            return self.ok("503 5.5.1 Nested MAIL command").await;
        }
        let Some((mail_from, params)) = parse_path(args, "FROM:") else {
            return self.ok("501 5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        for param in &params {
            let (keyword, value) = param.split_once('=').unwrap_or((param, ""));
            match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<usize>() {
                    Ok(size) if size > MAX_MESSAGE_SIZE => {
                        return self
                            .ok("552 5.3.4 Message size exceeds fixed maximum message size")
                            .await;
                    }
                    Ok(_) => {}
                    Err(_) => return self.ok("501 5.5.4 Bad SIZE parameter").await,
                },
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
                "SMTPUTF8" if value.is_empty() => {}
                _ => {
                    return self
                        .ok(&format!("555 5.5.4 Unsupported MAIL parameter {param}"))
                        .await;
                }
            }
        }
        let fault = self.state.lock().roll_fault();
        if let Some(fault) = fault {
            return self.fault(fault).await;
        }
        self.envelope = Some(Envelope {
            mail_from,
            rcpt_to: Vec::new(),
        });
        self.ok("250 2.1.0 Ok").await
    }

    /// Answers with an injected fault; a `421` ends the session.
    async fn fault(&mut self, fault: Fault) -> io::Result<Flow> {
        self.reply(fault.reply()).await?;
        if fault == Fault::Closing {
            let _ = self.writer.shutdown().await;
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }

    async fn handle_rcpt(&mut self, args: &str) -> io::Result<Flow> {
        if self.envelope.is_none() {
            return self.ok("503 5.5.1 Need MAIL command").await;
        }
        let Some((recipient, params)) = parse_path(args, "TO:") else {
            return self.ok("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        if let Some(param) = params.first() {
            return self
                .ok(&format!("555 5.5.4 Unsupported RCPT parameter {param}"))
                .await;
        }
        let (scripted, fault) = {
            let mut inner = self.state.lock();
            let key = recipient.to_lowercase();
            *inner.rcpt_attempts.entry(key.clone()).or_default() += 1;
            match inner.recipient_replies.get(&key).cloned() {
                Some(reply) => (Some(reply), None),
                None => (None, inner.roll_fault()),
            }
        };
        if let Some(reply) = scripted {
            return self.ok(&reply).await;
        }
        if let Some(fault) = fault {
            return self.fault(fault).await;
        }
        if let Some(envelope) = self.envelope.as_mut() {
            envelope.rcpt_to.push(recipient);
        }
        self.ok("250 2.1.5 Ok").await
    }

    async fn handle_data(&mut self, args: &str) -> io::Result<Flow> {
        if !args.is_empty() {
            return self.ok("501 5.5.4 Syntax: DATA").await;
        }
        match &self.envelope {
            None => return self.ok("503 5.5.1 Need MAIL command").await,
            Some(envelope) if envelope.rcpt_to.is_empty() => {
                return self.ok("554 5.5.1 No valid recipients").await;
            }
            Some(_) => {}
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>").await?;
        let scripted = self.state.lock().data_outcomes.pop_front();
        if matches!(scripted, Some(DataOutcome::DropDuringData)) {
            // Take the first line, so the client is surely sending, then
            // hang up on it.
            let mut line = Vec::new();
            let _ = read_line(&mut self.reader, &mut line, MAX_MESSAGE_SIZE).await?;
            self.envelope = None;
            self.state.lock().dropped_during_data += 1;
            self.state.changed.notify_waiters();
            return Ok(Flow::Close);
        }
        let data = self.read_data().await?;
        if !self.state.message_delay.is_zero() {
            tokio::time::sleep(self.state.message_delay).await;
        }
        // Whatever happens next, the transaction is over.
        let Some(Envelope { mail_from, rcpt_to }) = self.envelope.take() else {
            unreachable!("checked above");
        };
        let data = match data {
            DataRead::Complete(data) => data,
            DataRead::Disconnected | DataRead::TooBig => {
                // The scripted outcome was not used: keep it for the next one.
                if let Some(outcome) = scripted {
                    self.state.lock().data_outcomes.push_front(outcome);
                }
                if matches!(data, DataRead::Disconnected) {
                    return Ok(Flow::Close);
                }
                self.state.lock().rejected += 1;
                self.state.changed.notify_waiters();
                return self
                    .ok("552 5.3.4 Message size exceeds fixed maximum message size")
                    .await;
            }
        };
        let message = ReceivedMessage {
            mail_from,
            rcpt_to,
            data,
            connection: self.id,
        };
        // Decide and record in one critical section, before replying, as a
        // real server queues the mail before acknowledging it.
        let reply = {
            let mut inner = self.state.lock();
            match scripted {
                Some(DataOutcome::DropConnection) => {
                    inner.ambiguous.push(message);
                    DataReply::Drop
                }
                Some(DataOutcome::Silence) => {
                    inner.ambiguous.push(message);
                    DataReply::Silence
                }
                Some(DataOutcome::Reply(reply)) if !reply.starts_with('2') => {
                    inner.rejected += 1;
                    DataReply::Line(reply)
                }
                Some(DataOutcome::Reply(reply)) => {
                    inner.messages.push(message);
                    DataReply::Line(reply)
                }
                Some(DataOutcome::DropDuringData) => unreachable!("handled before the data"),
                None => match inner.roll_fault() {
                    Some(fault) => {
                        inner.rejected += 1;
                        DataReply::Fault(fault)
                    }
                    None => {
                        inner.messages.push(message);
                        DataReply::Line(DEFAULT_DATA_REPLY.to_owned())
                    }
                },
            }
        };
        self.state.changed.notify_waiters();
        match reply {
            DataReply::Line(reply) => self.ok(&reply).await,
            DataReply::Fault(fault) => self.fault(fault).await,
            // Close without a word: both halves are dropped by the caller.
            DataReply::Drop => Ok(Flow::Close),
            // Say nothing and read whatever comes until the client gives up.
            DataReply::Silence => {
                let mut line = Vec::new();
                while let LineRead::Line | LineRead::TooLong =
                    read_line(&mut self.reader, &mut line, MAX_COMMAND_LINE).await?
                {
                    line.clear();
                }
                Ok(Flow::Close)
            }
        }
    }

    /// Reads message lines up to the lone `.` line, undoing dot-stuffing and
    /// keeping every other byte, line endings included, as sent.
    async fn read_data(&mut self) -> io::Result<DataRead> {
        let mut data = Vec::new();
        let mut too_big = false;
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut self.reader, &mut line, MAX_MESSAGE_SIZE).await? {
                LineRead::Eof => return Ok(DataRead::Disconnected),
                LineRead::TooLong => {
                    too_big = true;
                    continue;
                }
                LineRead::Line => {}
            }
            if trim_line_ending(&line) == b"." {
                break;
            }
            // RFC 5321 4.5.2: a leading dot was doubled by the client.
            let content = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + content.len() > MAX_MESSAGE_SIZE {
                too_big = true;
            }
            if !too_big {
                data.extend_from_slice(content);
            }
        }
        Ok(if too_big {
            DataRead::TooBig
        } else {
            DataRead::Complete(data)
        })
    }
}

/// Parses `FROM:<address> PARAM...` / `TO:<address> PARAM...` (keyword
/// matched case-insensitively, a space after the colon tolerated, brackets
/// optional). Returns the address without brackets and the parameters.
fn parse_path(args: &str, keyword: &str) -> Option<(String, Vec<String>)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start();
    let (address, params) = match rest.strip_prefix('<') {
        Some(bracketed) => {
            let end = bracketed.find('>')?;
            (&bracketed[..end], &bracketed[end + 1..])
        }
        None => {
            let end = rest.find(' ').unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            (&rest[..end], &rest[end..])
        }
    };
    let params = params.split_whitespace().map(str::to_owned).collect();
    Some((address.to_owned(), params))
}
