//! What a hostile probe of the web server found: chunked bodies past the 64 KiB limit,
//! IPv4-mapped IPv6 addresses counted apart from their IPv4 form, and connections that send
//! nothing (or their headers a byte at a time) held open forever. Raw TCP where the client must
//! do what reqwest will not: a chunked body, a silent socket, a stalled header.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sangha::domain::{EmailAddress, SubscriptionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend_tests;
use crate::support::{Backend, DEADLINE, Options, TestApp, eventually};

backend_tests!(
    a_chunked_body_over_64_kib_gets_413_on_every_route_and_changes_nothing,
    an_ipv4_mapped_forwarded_address_is_the_same_client_as_its_ipv4_form,
);

/// `host:port` of the app, for raw connections.
fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) in 8 KiB chunks, and
/// returns the status code of the answer.
async fn post_chunked(app: &TestApp, path: &str, content_type: &str, body: &[u8]) -> u16 {
    let stream = TcpStream::connect(socket_address(app)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(8 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // Written beside the reading: a server may answer before it has read everything.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    drop(writing);
    assert!(
        read.is_ok(),
        "POST {path:.40}: no answer within {DEADLINE:?}"
    );
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("POST {path:.40}: no status line in {head:.200}"))
}

/// The first line of the text part of the newest message to `email` containing `needle`.
fn link_in_mail_to(app: &TestApp, email: &str, needle: &str) -> String {
    let to = format!("To: {email}");
    let raw = app
        .outbox()
        .into_iter()
        .rev()
        .find(|m| String::from_utf8_lossy(m).contains(&to))
        .unwrap_or_else(|| panic!("no mail to {email}"));
    let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let text = message.body_text(0).unwrap().into_owned();
    let start = text
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in {text}"));
    text[start..].split_whitespace().next().unwrap().to_owned()
}

async fn statuses(app: &TestApp, email: &str) -> Vec<(String, SubscriptionStatus)> {
    app.store()
        .subscriber_detail(&EmailAddress::parse(email).unwrap())
        .await
        .unwrap()
        .map(|d| {
            d.subscriber
                .subscriptions
                .into_iter()
                .map(|s| (s.offering, s.status))
                .collect()
        })
        .unwrap_or_default()
}

async fn a_chunked_body_over_64_kib_gets_413_on_every_route_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Someone subscribed, who got one email with unsubscribe and preferences links.
    app.confirmed_subscriber("stays@example.org", &["morning-meditation"])
        .await;
    let content = app.write_content("note.md", "---\nsubject: A note\n---\nBreathe.\n");
    let id = app.schedule_now("morning-meditation", &content);
    app.wait_for_send_done(id).await;
    let unsubscribe = link_in_mail_to(&app, "stays@example.org", "/unsubscribe/");
    let preferences = link_in_mail_to(&app, "stays@example.org", "/preferences/");
    let base = app.config.base_url().to_owned();
    let unsubscribe = unsubscribe.replace(&base, "");
    let preferences = preferences.replace(&base, "");
    // Someone whose signup waits for confirmation.
    let before = app.outbox().len();
    let r = app
        .signup("pending@example.org", &["morning-meditation"])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let confirm = app.confirm_path(before).await;

    let padding = "x".repeat(70 * 1024);
    let form = "application/x-www-form-urlencoded";
    let cases = [
        (confirm.clone(), format!("pad={padding}")),
        (
            unsubscribe.clone(),
            format!("List-Unsubscribe=One-Click&pad={padding}"),
        ),
        (
            preferences.clone(),
            format!("offerings=guided-meditations&name={padding}"),
        ),
        (
            format!("{preferences}/erase"),
            format!("confirm=yes&pad={padding}"),
        ),
        (
            "/subscribe".to_owned(),
            format!("email=new%40example.org&offerings=morning-meditation&name={padding}"),
        ),
    ];
    for (path, body) in &cases {
        let status = post_chunked(&app, path, form, body.as_bytes()).await;
        assert_eq!(status, 413, "chunked POST {path:.40}");
    }
    let json = serde_json::to_vec(&serde_json::json!({
        "email": "json@example.org", "offerings": ["morning-meditation"], "name": padding,
    }))
    .unwrap();
    let status = post_chunked(&app, "/subscribe", "application/json", &json).await;
    assert_eq!(status, 413, "chunked JSON signup");

    // Nothing happened.
    assert_eq!(
        statuses(&app, "pending@example.org").await,
        vec![("morning-meditation".to_owned(), SubscriptionStatus::Pending)]
    );
    assert_eq!(
        statuses(&app, "stays@example.org").await,
        vec![(
            "morning-meditation".to_owned(),
            SubscriptionStatus::Confirmed
        )]
    );
    assert!(statuses(&app, "new@example.org").await.is_empty());
    assert!(statuses(&app, "json@example.org").await.is_empty());

    // A small chunked body still reaches the handler whole.
    let status = post_chunked(&app, &confirm, form, b"").await;
    assert_eq!(status, 200, "small chunked confirm");
    let status = post_chunked(&app, &unsubscribe, form, b"List-Unsubscribe=One-Click").await;
    assert_eq!(status, 200, "small chunked one-click unsubscribe");
    assert_eq!(
        statuses(&app, "pending@example.org").await,
        vec![(
            "morning-meditation".to_owned(),
            SubscriptionStatus::Confirmed
        )]
    );
    assert_eq!(
        statuses(&app, "stays@example.org").await,
        vec![(
            "morning-meditation".to_owned(),
            SubscriptionStatus::Unsubscribed
        )]
    );
}

/// The IP recorded with the consent of `email`'s first signup.
async fn consent_ip(app: &TestApp, email: &str) -> Option<String> {
    app.store()
        .subscriber_detail(&EmailAddress::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap()
        .consents[0]
        .ip
        .clone()
}

async fn an_ipv4_mapped_forwarded_address_is_the_same_client_as_its_ipv4_form(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.signup.rate_limit_per_minute = 1;
        c.signup.rate_limit_burst = 1;
    })
    .await;
    let signup = |forwarded: &'static str, email: &'static str| {
        app.http
            .post(app.url("/subscribe"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", forwarded)
            .body(format!(
                "email={}&offerings=morning-meditation",
                crate::support::urlencode(email)
            ))
            .send()
    };
    let r = signup("::ffff:198.51.100.7", "mapped@example.org")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = signup("198.51.100.7", "plain@example.org").await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "one client, spelled two ways, has one limit"
    );
    assert_eq!(
        consent_ip(&app, "mapped@example.org").await.as_deref(),
        Some("198.51.100.7"),
        "the consent record keeps the IPv4 form"
    );
}

/// Bound to `::ffff:127.0.0.1` (an IPv6 socket), the server sees IPv4 clients as
/// `::ffff:127.0.0.1`; they are recorded, trusted and limited as `127.0.0.1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_mapped_socket_peer_is_recorded_and_trusted_as_ipv4() {
    if std::net::TcpListener::bind("[::ffff:127.0.0.1]:0").is_err() {
        eprintln!("no IPv6 sockets here: skipping");
        return;
    }
    let app = TestApp::spawn_with(Backend::Sqlite, Options::default(), |c| {
        c.server.bind = "[::ffff:127.0.0.1]:0".parse().unwrap();
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{port}/subscribe");
    let form = "application/x-www-form-urlencoded";
    let r = app
        .http
        .post(&url)
        .header("content-type", form)
        .body("email=peer%40example.org&offerings=morning-meditation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        consent_ip(&app, "peer@example.org").await.as_deref(),
        Some("127.0.0.1")
    );
    let r = app
        .http
        .post(&url)
        .header("content-type", form)
        .header("x-forwarded-for", "198.51.100.9")
        .body("email=proxied%40example.org&offerings=morning-meditation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        consent_ip(&app, "proxied@example.org").await.as_deref(),
        Some("198.51.100.9"),
        "127.0.0.1 is a trusted proxy however the socket spells it"
    );
}

/// Waits (up to [`DEADLINE`]) for the server to close `stream`, reading and dropping whatever
/// it sends; returns how long that took.
async fn closed_within_deadline(stream: &mut TcpStream) -> Option<Duration> {
    let start = Instant::now();
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    closed.ok().map(|()| start.elapsed())
}

async fn app_with_short_timeouts() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, Options::default(), |c| {
        c.server.header_read_timeout_seconds = 1;
        c.server.idle_timeout_seconds = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = app_with_short_timeouts().await;
    let mut silent = TcpStream::connect(socket_address(&app)).await.unwrap();
    let took = closed_within_deadline(&mut silent)
        .await
        .expect("a silent connection is closed");
    assert!(
        took >= Duration::from_millis(900),
        "not before the timeout: {took:?}"
    );
    // The server still answers others.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_line_at_a_time_are_cut_off_at_the_header_timeout() {
    let app = app_with_short_timeouts().await;
    let mut slow = TcpStream::connect(socket_address(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A header line every 200 ms keeps the connection busy, never idle, and never done.
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut closed = false;
    while start.elapsed() < DEADLINE {
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => continue,
        }
    }
    assert!(closed, "a header that never ends is cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_and_a_stalled_body_are_closed() {
    let app = app_with_short_timeouts().await;
    // One request answered, then silence on a kept-alive connection.
    let mut idle = TcpStream::connect(socket_address(&app)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within_deadline(&mut idle).await.is_some(),
        "an idle kept-alive connection is closed"
    );
    // A body announced and never sent.
    let mut stalled = TcpStream::connect(socket_address(&app)).await.unwrap();
    stalled
        .write_all(
            b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nemail=",
        )
        .await
        .unwrap();
    assert!(
        closed_within_deadline(&mut stalled).await.is_some(),
        "a stalled body is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_silent_connections_do_not_stop_the_service() {
    let app = app_with_short_timeouts().await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(socket_address(&app)).await.unwrap());
    }
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    // All of them are let go.
    let all_closed = eventually(DEADLINE, || {
        silent.retain(|s| !is_closed(s));
        silent.is_empty().then_some(())
    })
    .await;
    assert!(all_closed.is_some(), "{} still open", silent.len());
}

/// Whether the server has closed `s` (reading and dropping what it sent before).
fn is_closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// `sangha serve` started with a soft limit of 256 open files runs with the hard limit.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_the_open_file_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::test_config(&Backend::Sqlite, dir.path()).await;
    let config_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" --config "$1" serve --no-worker"#)
        .arg(env!("CARGO_BIN_EXE_sangha"))
        .arg(&config_path)
        .env("SANGHA__DATA_DIR", &config.data_dir)
        .env("SANGHA__DATABASE__URL", &config.database.url)
        .env("SANGHA__TOKENS__KEY", crate::support::TEST_TOKEN_KEY)
        .env("SANGHA__SERVER__BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let exe = format!("/proc/{}/exe", child.id());
    let sangha = std::fs::canonicalize(env!("CARGO_BIN_EXE_sangha")).unwrap();
    // Read only once the shell has set its limit and become `sangha`.
    let open_files = || -> Option<(String, String)> {
        (std::fs::read_link(&exe).ok()? == sangha).then_some(())?;
        let text = std::fs::read_to_string(&limits).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let mut fields = line["Max open files".len()..].split_whitespace();
        Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
    };
    let raised = eventually(DEADLINE, || {
        open_files().filter(|(soft, hard)| soft == hard && soft != "256")
    })
    .await;
    let seen = open_files();
    let _ = child.kill();
    let _ = child.wait();
    assert!(raised.is_some(), "soft and hard limits: {seen:?}");
}
