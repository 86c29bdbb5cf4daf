//! The SMTP transport's own session pool against the test SMTP server: bounded connections,
//! authentication, how failures are sorted, what is (not) sent twice, reconnecting and the rate
//! limit. No database: these talk to `Transport` directly.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use lettre::Message;
use sangha::config::{Config, Secret, TlsMode, TransportKind};
use sangha::mail::{RelayFault, RelayState, SendErrorKind, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::DEADLINE;
use crate::support::smtp::TestSmtpServer;

fn smtp_config(server: &TestSmtpServer, pool_size: u32) -> Config {
    let mut config = Config::default();
    config.mail.transport = TransportKind::Smtp;
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = server.port();
    config.smtp.tls = TlsMode::None;
    config.smtp.pool_size = pool_size;
    config.smtp.rate_per_second = 0;
    config.smtp.timeout_seconds = 10;
    config
}

fn transport(config: &Config) -> Transport {
    Transport::from_config(config).expect("SMTP transport from config")
}

fn message_to(to: &str, n: usize) -> Message {
    Message::builder()
        .from("Shakti Temple <hello@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(format!("Morning Meditation, day {n}"))
        .message_id(Some(format!("<{n}.pool-test@example.com>")))
        .body(String::from("Breathe in, and let the morning arrive.\r\n"))
        .unwrap()
}

fn message(n: usize) -> Message {
    message_to(&format!("reader{n}@example.org"), n)
}

fn message_ids(server: &TestSmtpServer) -> Vec<String> {
    server
        .messages()
        .iter()
        .map(|m| m.parsed().message_id().unwrap().to_owned())
        .collect()
}

/// Sends messages `0..count` through `transport`, `concurrency` at a time; panics on a failure.
async fn send_all(transport: &Transport, count: usize, concurrency: usize) {
    stream::iter(0..count)
        .map(|n| {
            let transport = transport.clone();
            async move {
                let reply = transport.send(message(n)).await.expect("send");
                assert!(reply.starts_with("250"), "{reply}");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn two_hundred_messages_from_eight_senders_share_at_most_four_connections() {
    let server = TestSmtpServer::start().await;
    let transport = transport(&smtp_config(&server, 4));

    send_all(&transport, 200, 8).await;

    let ids: HashSet<String> = message_ids(&server).into_iter().collect();
    assert_eq!(ids.len(), 200, "every message arrived exactly once");
    assert!(
        server.connections() <= 4,
        "{} connections for a pool of 4",
        server.connections()
    );
}

#[tokio::test]
async fn the_pool_authenticates_and_a_wrong_password_is_a_transient_error() {
    let server = TestSmtpServer::builder()
        .credentials("sangha", "s3cret-pass")
        .start()
        .await;
    let mut config = smtp_config(&server, 2);
    config.smtp.username = "sangha".into();
    config.smtp.password = Secret::new("s3cret-pass");
    let reply = transport(&config).send(message(1)).await.unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(server.messages().len(), 1);

    // Rejected credentials are a configuration mistake, not a verdict on the message: the
    // delivery must stay retryable.
    config.smtp.password = Secret::new("wrong");
    let err = transport(&config).send(message(2)).await.unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Relay(RelayFault::Auth),
        "{}",
        err.message
    );
    assert!(err.message.contains("535"), "{}", err.message);
    assert!(!err.message.contains("wrong"), "{}", err.message);
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn rejections_are_sorted_by_reply_and_the_session_is_kept() {
    rejections_are_sorted(TestSmtpServer::start().await).await;
}

#[tokio::test]
async fn rejections_are_sorted_the_same_without_pipelining() {
    let server = TestSmtpServer::builder().without_pipelining().start().await;
    rejections_are_sorted(server).await;
}

async fn rejections_are_sorted(server: TestSmtpServer) {
    let transport = transport(&smtp_config(&server, 1));
    server.reject_recipient("gone@example.org", "550 5.1.1 No such user");

    let err = transport
        .send(message_to("gone@example.org", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind, SendErrorKind::BadRecipient, "{}", err.message);
    assert!(
        err.message.contains("5.1.1 No such user"),
        "{}",
        err.message
    );

    server.push_data_reply("554 5.7.1 Message refused");
    let err = transport.send(message(2)).await.unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Permanent, "{}", err.message);
    assert!(err.message.contains("554"), "{}", err.message);
    // An accepted message in between: three refusals in a row would close the session.
    transport.send(message(10)).await.unwrap();

    server.push_data_reply("451 4.3.0 Try again later");
    let err = transport.send(message(3)).await.unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Transient, "{}", err.message);
    assert!(err.message.contains("451"), "{}", err.message);

    let reply = transport.send(message(4)).await.unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        message_ids(&server),
        ["10.pool-test@example.com", "4.pool-test@example.com"]
    );
    // A clean rejection leaves the session in step (after RSET): no reconnecting.
    assert_eq!(server.connections(), 1);
    assert_eq!(server.commands_ahead_of_reply(), 0);
}

#[tokio::test]
async fn the_envelope_is_pipelined_when_the_server_offers_it() {
    // This server answers MAIL and RCPT only once DATA has arrived: a client that waited for
    // each reply would time out.
    let server = TestSmtpServer::builder()
        .defer_envelope_replies()
        .start()
        .await;
    let transport = transport(&smtp_config(&server, 2));
    send_all(&transport, 20, 4).await;
    assert_eq!(server.messages().len(), 20);
    assert!(server.connections() <= 2);
}

#[tokio::test]
async fn without_pipelining_the_pool_waits_for_every_reply() {
    let server = TestSmtpServer::builder().without_pipelining().start().await;
    let transport = transport(&smtp_config(&server, 4));
    send_all(&transport, 50, 8).await;
    assert_eq!(server.messages().len(), 50);
    assert_eq!(server.commands_ahead_of_reply(), 0);
}

#[tokio::test]
async fn a_refused_sender_in_a_pipelined_envelope_is_reported_and_the_session_kept() {
    // The server wants AUTH; the pool has no credentials, so MAIL FROM gets 530, and the
    // RCPT TO and DATA that were pipelined behind it get 503. All three replies are read.
    let server = TestSmtpServer::with_credentials("owner", "secret").await;
    let transport = transport(&smtp_config(&server, 1));
    for _ in 0..3 {
        let err = transport.send(message(1)).await.unwrap_err();
        assert_eq!(err.kind, SendErrorKind::Permanent, "{}", err.message);
        assert!(
            err.message.starts_with("MAIL FROM failed"),
            "{}",
            err.message
        );
        assert!(err.message.contains("530"), "{}", err.message);
    }
    assert!(server.messages().is_empty());
    assert_eq!(server.connections(), 1, "the session stayed in step");
}

#[tokio::test]
async fn lines_that_start_with_a_dot_arrive_intact() {
    let server = TestSmtpServer::start().await;
    let transport = transport(&smtp_config(&server, 1));
    let text = ".first line\r\nmiddle\r\n.\r\n..two dots\r\n. last\r\n";
    let message = Message::builder()
        .from("Shakti Temple <hello@example.com>".parse().unwrap())
        .to("reader@example.org".parse().unwrap())
        .subject("Dots")
        .header(lettre::message::header::ContentTransferEncoding::SevenBit)
        .body(text.to_owned())
        .unwrap();
    let formatted = message.formatted();
    transport.send(message).await.unwrap();
    let received = server.wait_for_messages(1, DEADLINE).await;
    assert!(
        received[0].data.starts_with(&formatted),
        "sent:\n{}\nreceived:\n{}",
        String::from_utf8_lossy(&formatted),
        received[0].data_lossy()
    );
    // Like lettre's own encoder, the data ends with CRLF "." CRLF after the message's own
    // last CRLF, so the body as received has one more empty line.
    assert_eq!(
        received[0].parsed().body_text(0).unwrap(),
        format!("{text}\r\n")
    );
}

#[tokio::test]
async fn a_connection_lost_after_the_data_is_transient_and_never_resent_by_the_pool() {
    let server = TestSmtpServer::start().await;
    let transport = transport(&smtp_config(&server, 2));
    server.push_drop_after_data();

    let err = transport.send(message(1)).await.unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Transient, "{}", err.message);
    assert!(err.message.contains("may have accepted"), "{}", err.message);
    assert_eq!(server.ambiguous().len(), 1, "the server got it once");
    assert!(server.messages().is_empty(), "and no second copy");
    assert_eq!(
        server.connections(),
        1,
        "no new connection to send it again"
    );

    // The next message opens a new session; the ambiguous one is still not repeated.
    transport.send(message(2)).await.unwrap();
    assert_eq!(message_ids(&server), ["2.pool-test@example.com"]);
    assert_eq!(server.ambiguous().len(), 1);
}

#[tokio::test]
async fn a_pooled_connection_the_server_dropped_is_replaced() {
    let server = TestSmtpServer::start().await;
    let proxy = CuttingProxy::start(server.addr()).await;
    let mut config = smtp_config(&server, 1);
    config.smtp.port = proxy.port();
    let transport = transport(&config);

    transport.send(message(1)).await.unwrap();
    proxy.cut_all().await;
    let reply = transport.send(message(2)).await.unwrap();

    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        message_ids(&server),
        ["1.pool-test@example.com", "2.pool-test@example.com"]
    );
    assert_eq!(server.connections(), 2, "the dead session was replaced");
}

#[tokio::test]
async fn a_missing_starttls_or_a_refusing_greeting_is_transient() {
    let server = TestSmtpServer::start().await;
    let mut config = smtp_config(&server, 1);
    config.smtp.tls = TlsMode::Starttls;
    let err = transport(&config).send(message(1)).await.unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Relay(RelayFault::Tls),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("server does not offer STARTTLS"),
        "{}",
        err.message
    );

    server.set_greeting_reply(Some("421 4.3.2 Service not available".into()));
    let err = transport(&smtp_config(&server, 1))
        .send(message(2))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Relay(RelayFault::Connect),
        "{}",
        err.message
    );
    assert!(err.message.contains("421"), "{}", err.message);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn the_rate_limit_spaces_messages_out() {
    let server = TestSmtpServer::start().await;
    let mut config = smtp_config(&server, 4);
    config.smtp.rate_per_second = 50;
    let transport = transport(&config);

    let started = Instant::now();
    send_all(&transport, 60, 8).await;
    let elapsed = started.elapsed();

    // The limiter lets one message through every 1/50 s with a burst of one, so the 60th
    // cannot start before 59 × 20 ms = 1.18 s. Only a lower bound is checked: a slow machine
    // may take longer, never shorter.
    assert!(
        elapsed >= Duration::from_millis(1100),
        "60 messages at 50/s took only {elapsed:?}"
    );
    assert_eq!(server.messages().len(), 60);
}

/// Not a test: a throughput figure to read by hand, with lettre's own pool for comparison.
/// `cargo test --release --test api smtp_pool -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn throughput_over_four_connections() {
    for concurrency in [4, 16] {
        let server = TestSmtpServer::start().await;
        let ours = transport(&smtp_config(&server, 4));
        let count = 5_000;
        let started = Instant::now();
        send_all(&ours, count, concurrency).await;
        let elapsed = started.elapsed();
        assert_eq!(server.messages().len(), count);
        println!(
            "sangha pool_size 4, {concurrency} senders: {count} messages in {elapsed:.2?} \
             = {:.0} msg/s over {} connections",
            count as f64 / elapsed.as_secs_f64(),
            server.connections()
        );
    }

    use lettre::transport::smtp::PoolConfig;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    for concurrency in [4, 16] {
        let server = TestSmtpServer::start().await;
        let lettre_pool = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.port())
            .pool_config(PoolConfig::new().max_size(4))
            .build();
        let count = 500;
        let started = Instant::now();
        stream::iter(0..count)
            .map(|n| {
                let lettre_pool = lettre_pool.clone();
                async move { lettre_pool.send(message(n)).await.expect("send") }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
        let elapsed = started.elapsed();
        assert_eq!(server.messages().len(), count);
        println!(
            "lettre pool max_size 4, {concurrency} senders: {count} messages in {elapsed:.2?} \
             = {:.0} msg/s over {} connections",
            count as f64 / elapsed.as_secs_f64(),
            server.connections()
        );
    }
}

/// A TCP proxy in front of the test server that can cut every connection through it, the way
/// a server (or a NAT box) drops an idle client.
struct CuttingProxy {
    port: u16,
    cut: watch::Sender<u64>,
    open: Arc<AtomicUsize>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl CuttingProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = watch::channel(0);
        let open = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn({
            let cut = cut.clone();
            let open = Arc::clone(&open);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let mut cut = cut.subscribe();
                    let open = Arc::clone(&open);
                    open.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                            _ = cut.changed() => {}
                        }
                        drop((client, upstream));
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        CuttingProxy {
            port,
            cut,
            open,
            accept_task,
        }
    }

    fn port(&self) -> u16 {
        self.port
    }

    /// Closes every open connection, and returns once they are all closed.
    async fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
        crate::support::eventually(DEADLINE, || {
            (self.open.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await
        .expect("the proxy closes its connections");
    }
}

/// Sends `count` messages at once and sorts the answers: sent, refused logins, held back.
async fn send_at_once(transport: &Transport, first: usize, count: usize) -> (usize, usize, usize) {
    let results = futures::future::join_all((first..first + count).map(|n| {
        let transport = transport.clone();
        async move { transport.send(message(n)).await }
    }))
    .await;
    let mut sorted = (0, 0, 0);
    for result in results {
        match result {
            Ok(_) => sorted.0 += 1,
            Err(e) if e.kind == SendErrorKind::Relay(RelayFault::Auth) => sorted.1 += 1,
            Err(e) if e.kind == SendErrorKind::Held => {
                assert!(
                    e.message.contains("refused the SMTP credentials") && e.message.contains("535"),
                    "{}",
                    e.message
                );
                sorted.2 += 1;
            }
            Err(e) => panic!("unexpected failure: {e:?}"),
        }
    }
    sorted
}

/// Issue 14: with a wrong password every message opened its own session and tried `AUTH`:
/// 1,000 recipients made 1,000 failed logins, which gets accounts locked by real providers.
#[tokio::test]
async fn a_wrong_password_costs_one_login_and_one_probe_at_a_time_after_it() {
    let server = TestSmtpServer::with_credentials("sangha", "right-pass").await;
    let mut config = smtp_config(&server, 4);
    config.smtp.username = "sangha".into();
    config.smtp.password = Secret::new("wrong-pass");
    let transport = transport(&config);
    transport.set_login_backoff(Duration::from_millis(200));

    // 40 messages at once, four sessions: one login is tried, and refused; the rest are held
    // back without a connection.
    assert_eq!(send_at_once(&transport, 0, 40).await, (0, 1, 39));
    assert_eq!(
        server.logins(),
        (1, 1),
        "one failed login, not one per message"
    );
    assert_eq!(server.connections(), 1);
    assert!(matches!(
        transport.relay_state(),
        RelayState::RefusedUntil(_)
    ));

    // When the next login is due, one message tries it while the others are still held.
    let due = crate::support::eventually(DEADLINE, || {
        (transport.relay_state() == RelayState::ProbeDue).then_some(())
    })
    .await;
    assert!(due.is_some(), "a login is due again after the backoff");
    assert_eq!(send_at_once(&transport, 40, 10).await, (0, 1, 9));
    assert_eq!(server.logins(), (2, 2));
    // The wait doubles after each refusal.
    let RelayState::RefusedUntil(next) = transport.relay_state() else {
        panic!("still refused");
    };
    assert!(
        next.duration_since(tokio::time::Instant::now()) > Duration::from_millis(250),
        "the second wait is longer than the first"
    );

    // The owner sets the password at the provider to the configured one: the next probe
    // logs in, and sending goes on as usual.
    server.set_password("wrong-pass");
    let due = crate::support::eventually(DEADLINE, || {
        (transport.relay_state() == RelayState::ProbeDue).then_some(())
    })
    .await;
    assert!(due.is_some());
    assert_eq!(send_at_once(&transport, 50, 10).await, (1, 0, 9));
    assert_eq!(transport.relay_state(), RelayState::Open);
    assert_eq!(send_at_once(&transport, 60, 10).await, (10, 0, 0));
    assert_eq!(server.logins().1, 2, "no refused login after the fix");
    assert_eq!(server.messages().len(), 11);
}

/// Issue 14: against `smtpd_client_connection_count_limit = 2` a pool of 8 made 5,816 refused
/// connections in a minute. A refused session shrinks the pool instead.
#[tokio::test]
async fn a_relay_that_allows_two_connections_shrinks_the_pool_instead_of_hammering_it() {
    let server = TestSmtpServer::builder().connection_limit(2).start().await;
    let transport = transport(&smtp_config(&server, 8));
    // 250 messages, 16 at a time; those whose session was refused are sent again, as the
    // outbox does.
    let mut pending: Vec<usize> = (0..250).collect();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= 20, "still {} to send", pending.len());
        let results: Vec<(usize, Result<String, _>)> = stream::iter(pending)
            .map(|n| {
                let transport = transport.clone();
                async move { (n, transport.send(message(n)).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        pending = Vec::new();
        for (n, result) in results {
            if let Err(e) = result {
                assert_eq!(
                    e.kind,
                    SendErrorKind::Relay(RelayFault::Connect),
                    "{}",
                    e.message
                );
                assert!(e.message.contains("421"), "{}", e.message);
                pending.push(n);
            }
        }
    }
    let (refused, most_open) = server.connection_limit_stats();
    // Six to learn the limit, and one each time the pool tries to grow back (every 100
    // messages accepted in a row).
    assert!(refused <= 10, "{refused} refused connections");
    assert!(most_open <= 2);
    assert!(transport.pool_capacity().unwrap() <= 3);
    let ids: HashSet<String> = message_ids(&server).into_iter().collect();
    assert_eq!(ids.len(), 250, "every message once");
    assert_eq!(server.messages().len(), 250);

    // The relay allows more again: the pool grows back, one session per 100 good answers.
    server.set_connection_limit(None);
    send_all(&transport, 400, 16).await;
    let capacity = transport.pool_capacity().unwrap();
    assert!(capacity >= 5, "grew back to {capacity} sessions");
    assert!(server.connection_limit_stats().1 >= 5);
}

/// `tls = "starttls"` against a relay that waits for us to start TLS (port 465) hears no
/// greeting: the error says what that silence likely means.
#[tokio::test]
async fn a_silent_relay_with_starttls_names_implicit_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = Config::default();
    config.mail.transport = TransportKind::Smtp;
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = port;
    config.smtp.tls = TlsMode::Starttls;
    config.smtp.timeout_seconds = 1;
    let err = transport(&config).send(message(1)).await.unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Relay(RelayFault::Connect),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("no answer within 1 s"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("set smtp.tls = \"tls\""),
        "{}",
        err.message
    );
}

/// Greylisting is its own kind of failure (retried after minutes, by the worker), and a
/// session the relay keeps refusing is closed rather than fed the rest of the batch.
#[tokio::test]
async fn greylisting_is_recognised_and_a_session_refused_three_times_is_closed() {
    let server = TestSmtpServer::start().await;
    for n in 0..3 {
        server.reject_recipient(
            &format!("reader{n}@example.org"),
            &format!(
                "451 4.7.1 <reader{n}@example.org>: Recipient address rejected: try again later"
            ),
        );
    }
    server.reject_recipient(
        "reader3@example.org",
        "450 4.2.0 <reader3@example.org>: Recipient address rejected: Greylisted, see \
         http://postgrey.schweikert.ch/help/example.org.html",
    );
    server.reject_recipient("reader4@example.org", "451 4.3.0 Temporary lookup failure");
    let transport = transport(&smtp_config(&server, 1));
    for n in 0..4 {
        let e = transport.send(message(n)).await.unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Greylisted, "{}", e.message);
    }
    let e = transport.send(message(4)).await.unwrap_err();
    assert_eq!(
        e.kind,
        SendErrorKind::Transient,
        "not greylisting: {}",
        e.message
    );
    transport.send(message(5)).await.unwrap();
    // Three refusals closed the first session (with QUIT); the rest went down a second one.
    assert_eq!(server.connections(), 2);
    assert_eq!(server.quits(), 1);
}
