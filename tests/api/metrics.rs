//! `GET /metrics` on `[metrics] bind`: served there and not on the site, counting what
//! happened (signups by outcome, confirmations, deliveries and the relay's replies,
//! unsubscribes, requests by route pattern), the due queue read at the scrape, and an
//! exposition `promtool check metrics` accepts.
//!
//! Each application has its own registry, so tests running side by side in this process count
//! apart, and the assertions are on exact values.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use sangha::clock::Clock;

use crate::backend_tests;
use crate::sends::MORNING;
use crate::support::smtp::TestSmtpServer;
use crate::support::{
    Backend, DEADLINE, Options, TestApp, confirm_path_in, eventually_async, relay_config,
};

backend_tests!(
    metrics_are_served_on_their_own_address_and_not_on_the_site,
    the_counters_show_what_happened_and_no_token_appears,
    the_queue_gauges_show_the_due_deliveries_and_how_long_they_waited,
    the_exposition_passes_promtool_check_metrics,
);

fn with_metrics(config: &mut sangha::config::Config) {
    config.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
}

async fn scrape(app: &TestApp) -> String {
    let base = app.metrics_address.as_ref().expect("a metrics address");
    let r = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), StatusCode::OK);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    r.text().await.unwrap()
}

/// The value of the sample named exactly `series` (name and labels), if it is there.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

async fn metrics_are_served_on_their_own_address_and_not_on_the_site(backend: Backend) {
    let app = TestApp::spawn_with(backend.clone(), Options::default(), with_metrics).await;
    let metrics = app.metrics_address.clone().expect("a metrics address");
    assert_ne!(metrics, app.address);
    let text = scrape(&app).await;
    assert!(
        text.contains("# TYPE sangha_deliveries_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP sangha_signups_total "), "{text}");
    // The closed label sets start at 0, so a rate sees the first event.
    assert_eq!(
        value(
            &text,
            r#"sangha_deliveries_total{kind="send",outcome="failed"}"#
        ),
        0.0
    );
    assert_eq!(
        value(&text, r#"sangha_signups_total{outcome="honeypot"}"#),
        0.0
    );

    // Not on the public site.
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    // And the metrics address serves nothing of the site.
    let r = app
        .http
        .get(format!("{metrics}/subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Off by default: no second listener.
    let plain = TestApp::spawn(backend).await;
    assert!(plain.metrics_address.is_none());
    assert_eq!(plain.get("/metrics").await.status(), StatusCode::NOT_FOUND);
}

async fn the_counters_show_what_happened_and_no_token_appears(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let relay = relay_config(server.port());
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        relay(c);
        with_metrics(c);
    })
    .await;

    // A signup, confirmed through the email the relay received.
    let r = app
        .signup("seeker@example.org", &["morning-meditation"])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let confirmation = server.wait_for_messages(1, DEADLINE).await.remove(0);
    let confirm_path = confirm_path_in(&confirmation.data);
    assert_eq!(
        app.post_form(&confirm_path, "").await.status(),
        StatusCode::OK
    );
    // A bot that fills the hidden field, and an address that is not one.
    let honeypot = app.config.signup.honeypot_field.clone();
    let r = app
        .post_form(
            "/subscribe",
            &format!("email=bot%40example.org&offerings=morning-meditation&{honeypot}=x"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = app
        .post_form(
            "/subscribe",
            "email=not-an-address&offerings=morning-meditation",
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A send, delivered through the relay, and a one-click unsubscribe from it.
    let send = app.schedule_now(
        "morning-meditation",
        &app.write_content("morning.md", MORNING),
    );
    app.wait_for_send_done(send).await;
    let received = server.wait_for_messages(2, DEADLINE).await;
    let unsubscribe_path = crate::support::link_path_in(&received[1].data, "/unsubscribe/");
    let r = app
        .http
        .post(app.url(&unsubscribe_path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let text = scrape(&app).await;
    let exactly = [
        (r#"sangha_signups_total{outcome="accepted"}"#, 1.0),
        (r#"sangha_signups_total{outcome="honeypot"}"#, 1.0),
        (r#"sangha_signups_total{outcome="invalid"}"#, 1.0),
        ("sangha_confirmations_total", 1.0),
        (
            r#"sangha_deliveries_total{kind="confirmation",outcome="sent"}"#,
            1.0,
        ),
        (
            r#"sangha_deliveries_total{kind="send",outcome="sent"}"#,
            1.0,
        ),
        (r#"sangha_smtp_replies_total{class="2xx"}"#, 2.0),
        ("sangha_unsubscribes_total", 1.0),
        (
            r#"sangha_http_request_duration_seconds_count{method="POST",route="/confirm/{token}",status="200"}"#,
            1.0,
        ),
        (
            r#"sangha_http_request_duration_seconds_count{method="POST",route="/unsubscribe/{token}",status="200"}"#,
            1.0,
        ),
        (
            r#"sangha_http_request_duration_seconds_count{method="POST",route="/subscribe",status="303"}"#,
            2.0,
        ),
        (
            r#"sangha_http_request_duration_seconds_count{method="POST",route="/subscribe",status="422"}"#,
            1.0,
        ),
    ];
    for (series, expected) in exactly {
        assert_eq!(value(&text, series), expected, "{series} in\n{text}");
    }
    // Nothing failed, was retried or was refused.
    for outcome in ["failed", "retried", "suppressed", "skipped", "held"] {
        for kind in ["confirmation", "send"] {
            let series = format!(r#"sangha_deliveries_total{{kind="{kind}",outcome="{outcome}"}}"#);
            assert_eq!(value(&text, &series), 0.0, "{series}");
        }
    }
    assert_eq!(
        value(&text, r#"sangha_signups_total{outcome="rate_limited"}"#),
        0.0
    );
    for class in ["4xx", "5xx", "connection_error"] {
        let series = format!(r#"sangha_smtp_replies_total{{class="{class}"}}"#);
        assert_eq!(value(&text, &series), 0.0, "{series}");
    }
    // The send is done: no progress series is left for it.
    assert!(!text.contains("sangha_send_deliveries{"), "{text}");
    // The pool's numbers are read at the scrape.
    assert!(value(&text, r#"sangha_db_pool_connections{state="idle"}"#) >= 0.0);
    assert_eq!(
        value(&text, "sangha_db_pool_max_connections"),
        f64::from(app.config.database.max_connections)
    );

    // Routes by pattern only: neither link's token is anywhere.
    for path in [&confirm_path, &unsubscribe_path] {
        let token = path.rsplit('/').next().unwrap();
        assert!(token.len() > 10, "{path}");
        assert!(!text.contains(token), "a token in the exposition:\n{text}");
    }
    assert!(!text.contains("seeker@example.org"));
}

async fn the_queue_gauges_show_the_due_deliveries_and_how_long_they_waited(backend: Backend) {
    let clock = Clock::manual(1_700_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        with_metrics,
    )
    .await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, "sangha_queue_due_deliveries"), 0.0);
    assert_eq!(value(&text, "sangha_queue_oldest_due_age_seconds"), 0.0);

    for email in ["one@example.org", "two@example.org", "three@example.org"] {
        let r = app.signup(email, &["morning-meditation"]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    clock.advance(Duration::from_secs(90));
    // The signup writer commits in groups: wait until all three confirmations are queued.
    let text = eventually_async(DEADLINE, || async {
        let text = scrape(&app).await;
        (sample(&text, "sangha_queue_due_deliveries") == Some(3.0)).then_some(text)
    })
    .await
    .expect("three due deliveries");
    assert_eq!(value(&text, "sangha_queue_oldest_due_age_seconds"), 90.0);
    // No worker ran: nothing was delivered.
    assert_eq!(
        value(
            &text,
            r#"sangha_deliveries_total{kind="confirmation",outcome="sent"}"#
        ),
        0.0
    );
}

/// `promtool` (Debian's `prometheus` package) checks the exposition's syntax and the naming
/// rules (units, `_total` on counters, help texts). `.ci/run` installs it and sets
/// `SANGHA_TEST_REQUIRE_PROMTOOL=1`; elsewhere the test says it skipped.
async fn the_exposition_passes_promtool_check_metrics(backend: Backend) {
    let required = std::env::var("SANGHA_TEST_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(!required, "promtool is required but not found");
        eprintln!("promtool not found: skipped (install Debian's prometheus package)");
        return;
    }
    let app = TestApp::spawn_with(backend, Options::default(), with_metrics).await;
    app.confirmed_subscriber("seeker@example.org", &["morning-meditation"])
        .await;
    let _ = app
        .post_form("/subscribe", "email=nope&offerings=morning-meditation")
        .await;
    let _ = app.get("/no/such/page").await;
    app.wait_for_sent(None, 1).await;
    let text = scrape(&app).await;
    assert!(text.contains("sangha_http_request_duration_seconds_bucket"));

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
