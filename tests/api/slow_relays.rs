//! Relays as small practices really use them: slow and rate-limited (issue 14). A lane must
//! never hold rows longer than its lease while they wait their turn behind the rate limit or
//! a slow relay, or another lane takes them over and the people get the message twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sangha::config::{Config, TlsMode, TransportKind};
use sangha::store::SendStatus;

use crate::backend_tests;
use crate::faults::{copies, import_confirmed, people, schedule_now, summary};
use crate::support::smtp::TestSmtpServer;
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    at_one_message_a_second_a_slow_relay_mails_everyone_exactly_once,
    at_two_messages_a_second_a_slow_relay_mails_everyone_exactly_once,
    at_three_messages_a_second_a_slow_relay_mails_everyone_exactly_once,
);

/// How long the relay takes over each message: as long as the lease itself.
const RELAY_DELAY: Duration = Duration::from_secs(3);
/// A lease this short makes the old failure quick to see: rows waiting behind the rate limit
/// outlived it within seconds.
const LEASE_SECONDS: u64 = 3;
const RECIPIENTS: usize = 8;
/// At one message a second, 8 messages of 3 s each take about 11 s; generous beyond that.
const SEND_DEADLINE: Duration = Duration::from_secs(60);

fn slow_smtp(port: u16, rate_per_second: u32) -> impl FnOnce(&mut Config) {
    move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = TlsMode::None;
        c.smtp.rate_per_second = rate_per_second;
        c.worker.lease_seconds = LEASE_SECONDS;
    }
}

/// Sends to [`RECIPIENTS`] people at `rate_per_second` through a relay that takes
/// [`RELAY_DELAY`] per message, stops the app, and checks what the relay got.
async fn everyone_gets_exactly_one_copy(backend: Backend, rate_per_second: u32) {
    let server = TestSmtpServer::builder()
        .delay_each_message(RELAY_DELAY)
        .start()
        .await;
    let app = TestApp::spawn_with(
        backend,
        Options::default(),
        slow_smtp(server.port(), rate_per_second),
    )
    .await;
    let everyone = people(RECIPIENTS);
    import_confirmed(&app.config, app.dir.path(), &everyone, "morning-meditation");
    let send = schedule_now(&app.config, app.dir.path());

    let started = Instant::now();
    let done = loop {
        let s = summary(app.store(), send).await;
        if s.status == SendStatus::Done {
            break s;
        }
        assert!(
            started.elapsed() < SEND_DEADLINE,
            "send not done after {SEND_DEADLINE:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    // Whatever a lane still had going is finished or dropped once the app has stopped.
    app.stop().await;

    let got = copies(&server.messages());
    let twice: HashMap<&String, usize> = got
        .iter()
        .filter(|(_, ids)| ids.len() != 1)
        .map(|(to, ids)| (to, ids.len()))
        .collect();
    assert!(
        twice.is_empty(),
        "at {rate_per_second}/s, people with more than one copy: {twice:?} \
         ({} messages for {RECIPIENTS} people, {} ambiguous, in {took:?})",
        server.messages().len(),
        server.ambiguous().len(),
    );
    for person in &everyone {
        assert!(got.contains_key(person), "{person} got nothing");
    }
    assert_eq!(done.counts.sent, RECIPIENTS as i64, "{done:?}");
    assert_eq!(
        done.interrupted, 0,
        "no lease ran out under a live worker: {done:?}"
    );
}

async fn at_one_message_a_second_a_slow_relay_mails_everyone_exactly_once(backend: Backend) {
    everyone_gets_exactly_one_copy(backend, 1).await;
}

async fn at_two_messages_a_second_a_slow_relay_mails_everyone_exactly_once(backend: Backend) {
    everyone_gets_exactly_one_copy(backend, 2).await;
}

async fn at_three_messages_a_second_a_slow_relay_mails_everyone_exactly_once(backend: Backend) {
    everyone_gets_exactly_one_copy(backend, 3).await;
}
