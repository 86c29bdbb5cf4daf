//! The common mistakes in setting up a relay (issue 14): each gets an error, or a warning
//! from `config check`, that names the fix. And `sends show` groups failure reasons by what
//! they say, not by the address in them.

use std::time::{Duration, Instant};

use lettre::Message;
use sangha::config::{Config, Secret, TlsMode, TransportKind};
use sangha::mail::{RelayFault, SendErrorKind, Transport};

use crate::backend_tests;
use crate::faults::{import_confirmed, people, schedule_now};
use crate::support::smtp::{TestSmtpServer, TestTls};
use crate::support::test_ca::TestCa;
use crate::support::{Backend, DEADLINE, Options, TestApp, run_cli_with, stderr, stdout};

backend_tests!(greylisting_of_many_recipients_is_one_reason_in_sends_show);

fn smtp(server: &TestSmtpServer, tls: TlsMode) -> Config {
    let mut config = Config::default();
    config.mail.transport = TransportKind::Smtp;
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = server.port();
    config.smtp.tls = tls;
    config.smtp.username = "sangha".into();
    config.smtp.password = Secret::new("s3cret-pass");
    config.smtp.timeout_seconds = 10;
    config
}

fn message() -> Message {
    Message::builder()
        .from("Shakti Temple <hello@example.com>".parse().unwrap())
        .to("reader@example.org".parse().unwrap())
        .subject("Morning Meditation")
        .body(String::from("Breathe in.\r\n"))
        .unwrap()
}

#[tokio::test]
async fn tls_none_against_a_relay_that_offers_login_only_after_starttls_names_the_fix() {
    let cert = TestCa::new("Relay CA").server_certificate(&["127.0.0.1"]);
    let server = TestSmtpServer::builder()
        .credentials("sangha", "s3cret-pass")
        .tls(TestTls::Starttls(cert.server_config()))
        .start()
        .await;
    let transport = Transport::from_config(&smtp(&server, TlsMode::None)).unwrap();
    let err = transport.send(message()).await.unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Relay(RelayFault::Auth),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("no login before STARTTLS")
            && err.message.contains("set smtp.tls = \"starttls\""),
        "{}",
        err.message
    );
    assert_eq!(server.logins(), (0, 0), "no password was sent in clear");
}

#[tokio::test]
async fn implicit_tls_against_a_plain_text_port_names_starttls() {
    let server = TestSmtpServer::with_credentials("sangha", "s3cret-pass").await;
    let transport = Transport::from_config(&smtp(&server, TlsMode::Tls)).unwrap();
    let started = Instant::now();
    let err = transport.send(message()).await.unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Relay(RelayFault::Tls),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("InvalidContentType"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("set smtp.tls = \"starttls\""),
        "the fix is named: {}",
        err.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no long silence"
    );
}

#[tokio::test]
async fn config_check_warns_about_likely_relay_mistakes() {
    let app = TestApp::spawn_without_worker(Backend::Sqlite).await;
    let check = |env: &[(&str, &str)]| {
        let mut all = vec![("SANGHA__MAIL__TRANSPORT", "smtp".to_owned())];
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let out = run_cli_with(&app.config, &["config", "check"], &all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("# warning:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let clear = check(&[
        ("SANGHA__SMTP__HOST", "mail.example.org"),
        ("SANGHA__SMTP__PORT", "25"),
        ("SANGHA__SMTP__TLS", "none"),
        ("SANGHA__SMTP__USERNAME", "sangha"),
        ("SANGHA__SMTP__PASSWORD", "s3cret-pass"),
    ]);
    assert_eq!(clear.len(), 1, "{clear:?}");
    assert!(clear[0].contains("in clear"), "{clear:?}");
    assert!(!clear[0].contains("s3cret-pass"), "{clear:?}");

    // The same on this machine is fine.
    for host in ["127.0.0.1", "localhost", "[::1]", "::1"] {
        let local = check(&[
            ("SANGHA__SMTP__HOST", host),
            ("SANGHA__SMTP__PORT", "25"),
            ("SANGHA__SMTP__TLS", "none"),
            ("SANGHA__SMTP__USERNAME", "sangha"),
            ("SANGHA__SMTP__PASSWORD", "s3cret-pass"),
        ]);
        assert!(local.is_empty(), "{host}: {local:?}");
    }

    let starttls_465 = check(&[
        ("SANGHA__SMTP__HOST", "mail.example.org"),
        ("SANGHA__SMTP__PORT", "465"),
        ("SANGHA__SMTP__TLS", "starttls"),
    ]);
    assert_eq!(starttls_465.len(), 1, "{starttls_465:?}");
    assert!(
        starttls_465[0].contains("set smtp.tls = \"tls\""),
        "{starttls_465:?}"
    );

    let tls_587 = check(&[
        ("SANGHA__SMTP__HOST", "mail.example.org"),
        ("SANGHA__SMTP__PORT", "587"),
        ("SANGHA__SMTP__TLS", "tls"),
    ]);
    assert_eq!(tls_587.len(), 1, "{tls_587:?}");
    assert!(
        tls_587[0].contains("set smtp.tls = \"starttls\""),
        "{tls_587:?}"
    );
}

async fn greylisting_of_many_recipients_is_one_reason_in_sends_show(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let everyone = people(6);
    for email in &everyone[1..] {
        server.reject_recipient(
            email,
            &format!(
                "451 4.7.1 <{email}>: Recipient address rejected: Greylisted, see \
                 http://postgrey.example/{email}"
            ),
        );
    }
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = server.port();
        c.smtp.tls = TlsMode::None;
    })
    .await;
    import_confirmed(&app.config, app.dir.path(), &everyone, "morning-meditation");
    let send = schedule_now(&app.config, app.dir.path()).to_string();
    let started = Instant::now();
    let shown = loop {
        let shown = stdout(&app.cli(&["sends", "show", &send]));
        if shown.contains("Greylisted") && shown.contains("sent: 1 ") {
            let lines: i64 = shown
                .lines()
                .filter(|l| l.contains("retrying"))
                .filter_map(|l| l.split_whitespace().next()?.parse::<i64>().ok())
                .sum();
            if lines == 5 {
                break shown;
            }
        }
        assert!(started.elapsed() < DEADLINE, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let greylisted: Vec<&str> = shown.lines().filter(|l| l.contains("Greylisted")).collect();
    assert_eq!(
        greylisted.len(),
        1,
        "one reason, not one per address: {shown}"
    );
    assert!(
        greylisted[0].trim_start().starts_with("5 retrying"),
        "{shown}"
    );
    assert!(!greylisted[0].contains("example.org"), "{shown}");

    // Greylisted people are tried again when the greylisting lets them through (minutes),
    // not after the usual 30 s, which would only be greylisted again.
    let now = app.clock.now_ms();
    let soonest: i64 =
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'")
            .fetch_one(app.store().pool())
            .await
            .unwrap();
    assert!(
        soonest - now >= 5 * 60_000,
        "greylisted retries come in {} s",
        (soonest - now) / 1000
    );
}
