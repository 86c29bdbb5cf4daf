//! The embeddable form (`sangha form`, issue 19 point 1): the snippet on a page of another
//! origin, signed up through in headless Chromium with its script on and off; and the JSON
//! answer readable only by the origins in `server.cors_origins`.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use axum::response::Html;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use sangha::domain::SubscriptionStatus;
use serde_json::json;

use crate::backend_tests;
use crate::support::{
    Backend, DEADLINE, Options, TestApp, confirm_path_in, eventually, run_cli, run_cli_with,
    stderr, stdout,
};

backend_tests!(
    a_form_post_asking_for_json_gets_it_and_only_listed_origins_may_read_it,
    the_snippet_is_printed_for_the_offerings_named,
);

/// The time zone Chromium runs in (from `TZ`), which the snippet's script must send.
const BROWSER_ZONE: &str = "Pacific/Auckland";

async fn a_form_post_asking_for_json_gets_it_and_only_listed_origins_may_read_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.server.cors_origins = vec!["http://her-site.example".into()];
    })
    .await;
    // What the snippet's script sends: a form body and `Accept: application/json`, both
    // allowed in a CORS "simple" request, so the browser sends no preflight first.
    let post = |email: &str, origin: &str| {
        app.http
            .post(app.url("/subscribe"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("origin", origin.to_owned())
            .body(format!(
                "email={email}&offerings=morning-meditation&timezone=Europe%2FLisbon&website="
            ))
            .send()
    };
    let listed = post("ana%40example.org", "http://her-site.example")
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::ACCEPTED);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "http://her-site.example"
    );
    assert!(
        !listed
            .headers()
            .contains_key("access-control-allow-credentials")
    );
    let body: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(body["status"], "pending");

    let other = post("bo%40example.org", "http://not-listed").await.unwrap();
    assert!(
        !other.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        other.headers()
    );

    // Field errors come back as JSON too, not as the signup page.
    let invalid = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body("email=not-an-address&offerings=morning-meditation")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = invalid.json().await.unwrap();
    assert!(body["fields"]["email"].is_string(), "{body}");

    // A browser's own form post (Accept: text/html…) still gets the page.
    let page = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .body("email=cy%40example.org&offerings=morning-meditation")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
}

async fn the_snippet_is_printed_for_the_offerings_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = [(
        "SANGHA__SERVER__BASE_URL",
        "https://news.example.org".to_owned(),
    )];
    let all = run_cli_with(&app.config, &["form"], &base);
    assert!(all.status.success(), "{}", stderr(&all));
    let html = stdout(&all);
    assert!(
        html.contains(
            r#"<form class="sangha-form" method="post" action="https://news.example.org/subscribe""#
        ),
        "{html}"
    );
    assert!(html.contains(r#"value="guided-meditations" checked"#));
    for offering in &app.config.offerings {
        assert!(
            html.contains(&format!("> {}</label>", offering.name)),
            "{html}"
        );
    }
    assert!(html.contains(r#"name="website""#));
    assert!(html.contains(r#"role="status""#));
    assert!(!html.contains("<style>"));

    let one = run_cli_with(
        &app.config,
        &[
            "form",
            "--offering",
            "morning-meditation",
            "--style",
            "inline",
        ],
        &base,
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let html = stdout(&one);
    assert!(html.contains(r#"<input type="hidden" name="offerings" value="morning-meditation">"#));
    assert!(html.contains("<style>") && html.contains("sangha-form-inline"));

    // (A private offering is refused too: see the unit tests of src/cli/form.rs.)
    let refused = run_cli(&app.config, &["form", "--offering", "nope"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("no offering `nope`"),
        "{}",
        stderr(&refused)
    );
}

/// The browser test: SQLite is enough (the store does nothing browser-specific).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_on_another_site_signs_up_with_and_without_script_in_chromium() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let her_site = Site::start().await;
    let other_site = Site::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, Options::default(), |c| {
        c.server.cors_origins = vec![her_site.origin.clone()];
    })
    .await;
    let printed = run_cli_with(
        &app.config,
        &["form"],
        &[("SANGHA__SERVER__BASE_URL", app.address.clone())],
    );
    assert!(printed.status.success(), "{}", stderr(&printed));
    let snippet = stdout(&printed);
    her_site.show(&snippet);
    other_site.show(&snippet);
    let driver = Driver::start(&chromedriver).await;

    // 1. Script on: the answer appears in place, and the zone is the browser's.
    let browser = driver.session(&chromium, true).await;
    browser.goto(&her_site.origin).await.unwrap();
    fill_and_submit(&browser, "anand@example.org").await;
    let answer = status_text(&browser, |t| t.contains("check your inbox")).await;
    assert!(answer.contains("confirm"), "{answer}");
    assert_eq!(
        browser.current_url().await.unwrap().as_str(),
        format!("{}/", her_site.origin)
    );
    confirm(&app, "anand@example.org").await;
    let row = subscriber(&app, "anand@example.org").await;
    assert_eq!(row.timezone.as_deref(), Some(BROWSER_ZONE));

    // 3. An origin not in cors_origins: the request goes (as any form post would), but the
    // page cannot read the answer, and says so.
    browser.goto(&other_site.origin).await.unwrap();
    fill_and_submit(&browser, "mira@example.org").await;
    let answer = status_text(&browser, |t| t.contains("could not be read")).await;
    assert!(!answer.contains("check your inbox."), "{answer}");
    browser.close().await.unwrap();

    // 2. Script off: the plain form leaves for Sangha's own answer page.
    let browser = driver.session(&chromium, false).await;
    browser.goto(&her_site.origin).await.unwrap();
    fill_and_submit(&browser, "devi@example.org").await;
    let landed = format!("{}/subscribe/check-inbox", app.address);
    let mut url = String::new();
    for _ in 0..500 {
        url = browser.current_url().await.unwrap().to_string();
        if url == landed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(url, landed);
    let heading = browser
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(heading.to_lowercase().contains("inbox"), "{heading}");
    confirm(&app, "devi@example.org").await;
    // No script, no zone.
    assert_eq!(subscriber(&app, "devi@example.org").await.timezone, None);
    browser.close().await.unwrap();
}

/// Types `email` into the snippet's form and submits it.
async fn fill_and_submit(browser: &Client, email: &str) {
    let field = browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(
            r#"form[data-sangha-form] input[name="email"]"#,
        ))
        .await
        .expect("the snippet's email field");
    field.send_keys(email).await.unwrap();
    browser
        .find(Locator::Css(
            r#"form[data-sangha-form] button[type="submit"]"#,
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The form's `role="status"` text once `done` holds for it (lowercased), within the deadline.
async fn status_text(browser: &Client, done: impl Fn(&str) -> bool) -> String {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let text = browser
            .find(Locator::Css(r#"form[data-sangha-form] [role="status"]"#))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .to_lowercase();
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < end,
            "the answer shown: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Confirms through the link of the confirmation email sent to `email`.
async fn confirm(app: &TestApp, email: &str) {
    let needle = format!("To: {email}");
    let raw = eventually(DEADLINE, || {
        app.outbox()
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains(&needle))
    })
    .await
    .unwrap_or_else(|| panic!("no confirmation email for {email}"));
    let r = app.post_form(&confirm_path_in(&raw), "").await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// `email`'s row, with every subscription of the snippet confirmed.
async fn subscriber(app: &TestApp, email: &str) -> sangha::store::SubscriberRow {
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    let row = rows
        .into_iter()
        .find(|r| r.email == email)
        .unwrap_or_else(|| panic!("no subscriber {email}"));
    let public = app.config.offerings.iter().filter(|o| o.public).count();
    assert_eq!(row.subscriptions.len(), public, "{row:?}");
    assert!(
        row.subscriptions
            .iter()
            .all(|s| s.status == SubscriptionStatus::Confirmed),
        "{row:?}"
    );
    row
}

/// Debian's chromium and chromedriver; `None` skips the test, unless
/// SANGHA_TEST_REQUIRE_CHROMIUM=1, where it fails.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    let found = find("chromium").zip(find("chromedriver"));
    if found.is_none() {
        assert!(
            std::env::var("SANGHA_TEST_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "SANGHA_TEST_REQUIRE_CHROMIUM=1 but chromium or chromedriver is not installed \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: chromium or chromedriver is not installed (apt-get install chromium \
             chromium-driver); set SANGHA_TEST_REQUIRE_CHROMIUM=1 to make this a failure"
        );
    }
    found
}

/// Another site on its own origin (`http://127.0.0.1:PORT`) whose page holds the snippet.
struct Site {
    origin: String,
    page: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Site {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let page = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shown = page.clone();
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let body = shown.lock().unwrap().clone();
                async move { Html(body) }
            }),
        );
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { origin, page }
    }

    /// Serves `snippet` inside a page of the site's own.
    fn show(&self, snippet: &str) {
        *self.page.lock().unwrap() = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Her practice</title></head><body><main><h1>Her practice</h1>\
             <aside><p>Sign up for my newsletter to receive my offerings</p>{snippet}</aside>\
             </main></body></html>"
        );
    }
}

/// chromedriver on a free port of 127.0.0.1, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Driver {
    async fn start(chromedriver: &PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .env("TZ", BROWSER_ZONE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = crate::support::eventually_async(DEADLINE, || async {
            let r = http.get(format!("{url}/status")).send().await.ok()?;
            let body: serde_json::Value = r.json().await.ok()?;
            (body["value"]["ready"] == json!(true)).then_some(())
        })
        .await;
        assert!(ready.is_some(), "chromedriver did not become ready");
        Self {
            child,
            url,
            profiles: tempfile::tempdir().unwrap(),
        }
    }

    /// A new headless Chromium with a fresh profile, its JavaScript on or off.
    async fn session(&self, chromium: &PathBuf, script: bool) -> Client {
        let profile = tempfile::tempdir_in(self.profiles.path()).unwrap().keep();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if !script {
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        let mut options = json!({ "binary": chromium, "args": args });
        if !script {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
