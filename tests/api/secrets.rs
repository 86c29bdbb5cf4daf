//! Secrets: the token key can be rotated while links already sent keep working (and erased
//! people stay suppressed), and no secret — SMTP password, token keys, database password, the
//! tokens in links — reaches the logs, an error or `config check`, even at `RUST_LOG=trace`.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use sangha::app::Application;
use sangha::clock::Clock;
use sangha::config::Config;
use sangha::domain::{EmailAddress, Token, TokenKey, TokenPurpose};
use sangha::web::AppState;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;

use crate::backend_tests;
use crate::support::smtp::TestSmtpServer;
use crate::support::{
    Backend, DEADLINE, TEST_TOKEN_KEY, confirm_path_in, eventually, eventually_async, link_path_in,
    test_config,
};

backend_tests!(
    links_sent_before_a_key_rotation_keep_working_after_it,
    an_address_erased_before_a_key_rotation_stays_suppressed_after_it,
    no_secret_reaches_the_logs_at_debug_level,
    no_secret_reaches_the_logs_at_trace_level,
    no_secret_reaches_the_json_logs_at_trace_level,
);

// ---------------------------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------------------------

/// An application started in-process on a given config, so a test can stop it and start it
/// again on the same database with other keys.
struct Running {
    address: String,
    state: AppState,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: &Config) -> Self {
        config.validate().expect("valid config");
        let app = Application::build(config.clone(), Clock::System, true)
            .await
            .expect("application starts");
        let address = format!("http://{}", app.local_addr());
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until(async {
                let _ = rx.await;
            })
            .await
            .expect("application runs");
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            address,
            state,
            http,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(DEADLINE, &mut self.task).await;
    }

    async fn get(&self, path: &str) -> StatusCode {
        let url = format!("{}{path}", self.address);
        self.http.get(url).send().await.unwrap().status()
    }

    async fn post(&self, path: &str, body: &str) -> StatusCode {
        self.http
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn signup(&self, email: &str) {
        let body = format!("email={}&offerings=morning-meditation", urlencode(email));
        assert_eq!(self.post("/subscribe", &body).await, StatusCode::SEE_OTHER);
    }

    async fn statuses(&self, email: &str) -> Vec<String> {
        let email = EmailAddress::parse(email).unwrap();
        match self.state.store().subscriber_detail(&email).await.unwrap() {
            Some(d) => d
                .subscriber
                .subscriptions
                .iter()
                .map(|s| s.status.to_string())
                .collect(),
            None => Vec::new(),
        }
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `.eml` files of `dir` that contain `needle`, as text.
fn outbox_with(config: &Config, needle: &str) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(config.outbox_dir()) else {
        return Vec::new();
    };
    // Only finished messages: the transport writes a hidden temporary file first and renames
    // it, so a temporary file seen here may be gone a moment later.
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read(p).unwrap())
        .filter(|raw| String::from_utf8_lossy(raw).contains(needle))
        .collect()
}

async fn wait_for_mail(config: &Config, needle: &str, n: usize) -> Vec<Vec<u8>> {
    eventually(DEADLINE, || {
        let found = outbox_with(config, needle);
        (found.len() >= n).then_some(found)
    })
    .await
    .unwrap_or_else(|| panic!("no email containing {needle:?}"))
}

/// The token at the end of a link path.
fn token_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// Runs `sangha` with the test config's database and data folder, and exactly these keys.
fn cli_with_keys(config: &Config, key: &str, previous: &[&str], args: &[&str]) -> (bool, String) {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let previous: Vec<String> = previous.iter().map(|k| format!("\"{k}\"")).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sangha"))
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .env("SANGHA__DATA_DIR", &config.data_dir)
        .env("SANGHA__DATABASE__URL", &config.database.url)
        .env("SANGHA__TOKENS__KEY", key)
        .env(
            "SANGHA__TOKENS__PREVIOUS_KEYS",
            format!("[{}]", previous.join(",")),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sangha");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn links_sent_before_a_key_rotation_keep_working_after_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config_a = test_config(&backend, dir.path()).await;
    let key_a = TEST_TOKEN_KEY;
    let key_b = TokenKey::generate().to_base64();

    // Under key A: one person confirmed and sent a newsletter, another still pending.
    let app = Running::start(&config_a).await;
    app.signup("early@example.org").await;
    let confirm = confirm_path_in(&wait_for_mail(&config_a, "To: early@example.org", 1).await[0]);
    assert_eq!(app.post(&confirm, "").await, StatusCode::OK);
    app.signup("late@example.org").await;
    let late_confirm =
        confirm_path_in(&wait_for_mail(&config_a, "To: late@example.org", 1).await[0]);
    let content = dir.path().join("morning.md");
    std::fs::write(&content, crate::sends::MORNING).unwrap();
    let (ok, out) = cli_with_keys(
        &config_a,
        key_a,
        &[],
        &[
            "schedule",
            "--offering",
            "morning-meditation",
            "--content",
            content.to_str().unwrap(),
            "--now",
        ],
    );
    assert!(ok, "{out}");
    let newsletter = wait_for_mail(&config_a, "/unsubscribe/", 1).await.remove(0);
    let unsubscribe = link_path_in(&newsletter, "/unsubscribe/");
    let preferences = link_path_in(&newsletter, "/preferences/");
    app.stop().await;

    // Restarted with key B alone: the old links are refused, so what follows is the work of
    // `previous_keys` and nothing else.
    let mut config_b_alone = config_a.clone();
    config_b_alone.tokens.key = Some(TokenKey::from_base64(&key_b).unwrap());
    let app = Running::start(&config_b_alone).await;
    assert_eq!(app.get(&late_confirm).await, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&unsubscribe).await, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&preferences).await, StatusCode::NOT_FOUND);
    app.stop().await;

    // Restarted with key B and previous_keys = [A]: every link sent under A works.
    let mut config_b = config_a.clone();
    config_b.tokens.key = Some(TokenKey::from_base64(&key_b).unwrap());
    config_b.tokens.previous_keys = vec![TokenKey::from_base64(key_a).unwrap()];
    let app = Running::start(&config_b).await;
    assert_eq!(app.get(&late_confirm).await, StatusCode::OK);
    assert_eq!(app.post(&late_confirm, "").await, StatusCode::OK);
    assert_eq!(app.statuses("late@example.org").await, ["confirmed"]);
    assert_eq!(app.get(&preferences).await, StatusCode::OK);
    assert_eq!(app.get(&unsubscribe).await, StatusCode::OK);
    assert_eq!(
        app.post(&unsubscribe, "List-Unsubscribe=One-Click").await,
        StatusCode::OK
    );
    assert_eq!(app.statuses("early@example.org").await, ["unsubscribed"]);

    // A token signed with a key that is neither current nor previous is refused.
    let stranger = TokenKey::generate();
    let forge = |purpose, subject, scope| {
        stranger.sign(&Token {
            purpose,
            subject,
            scope,
            expires: 0,
            binding: 0,
        })
    };
    let early_id = app
        .state
        .store()
        .subscriber_detail(&EmailAddress::parse("early@example.org").unwrap())
        .await
        .unwrap()
        .unwrap()
        .subscriber
        .id;
    let offering_id = app
        .state
        .store()
        .active_offerings()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.slug == "morning-meditation")
        .unwrap()
        .id;
    for path in [
        format!(
            "/unsubscribe/{}",
            forge(TokenPurpose::Unsubscribe, early_id, offering_id)
        ),
        format!(
            "/preferences/{}",
            forge(TokenPurpose::Preferences, early_id, 0)
        ),
    ] {
        assert_eq!(app.get(&path).await, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(app.post(&path, "").await, StatusCode::NOT_FOUND, "{path}");
    }

    // New links are signed with B only; a confirmation forged with the stranger's key for the
    // same pending signup is refused while the real one works.
    app.signup("new@example.org").await;
    let fresh = confirm_path_in(&wait_for_mail(&config_b, "To: new@example.org", 1).await[0]);
    let token = token_of(&fresh);
    let b = TokenKey::from_base64(&key_b).unwrap();
    let a = TokenKey::from_base64(key_a).unwrap();
    let claims = b.verify(token, TokenPurpose::Confirm, 0).unwrap();
    assert!(a.verify(token, TokenPurpose::Confirm, 0).is_err());
    let forged = format!(
        "/confirm/{}",
        forge(TokenPurpose::Confirm, claims.subject, 0)
    );
    assert_eq!(app.get(&forged).await, StatusCode::NOT_FOUND);
    assert_eq!(app.post(&forged, "").await, StatusCode::NOT_FOUND);
    assert_eq!(app.statuses("new@example.org").await, ["pending"]);
    assert_eq!(app.get(&fresh).await, StatusCode::OK);
    assert_eq!(app.post(&fresh, "").await, StatusCode::OK);
    assert_eq!(app.statuses("new@example.org").await, ["confirmed"]);
    app.stop().await;
}

async fn an_address_erased_before_a_key_rotation_stays_suppressed_after_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&backend, dir.path()).await;
    let key_a = TEST_TOKEN_KEY;
    let key_b = TokenKey::generate().to_base64();
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "email,name,timezone,offerings\n\
         gone@example.org,Gone,,morning-meditation\n\
         stays@example.org,Stays,,morning-meditation\n",
    )
    .unwrap();
    let import = ["subscribers", "import", csv.to_str().unwrap()];
    let import: Vec<&str> = import
        .into_iter()
        .chain(["--confirmed", "--source", "retreat list"])
        .collect();

    // Imported and erased under key A.
    let (ok, out) = cli_with_keys(&config, key_a, &[], &import);
    assert!(ok, "{out}");
    let (ok, out) = cli_with_keys(
        &config,
        key_a,
        &[],
        &["subscribers", "erase", "gone@example.org"],
    );
    assert!(ok, "{out}");

    // The hash under B differs from the one stored under A: the check must look for both.
    let a = TokenKey::from_base64(key_a).unwrap();
    let b = TokenKey::from_base64(&key_b).unwrap();
    assert_ne!(
        a.email_hash("gone@example.org"),
        b.email_hash("gone@example.org")
    );

    // After the rotation to B (A kept as a previous key) the same file brings nobody back.
    let (ok, out) = cli_with_keys(&config, &key_b, &[key_a], &import);
    assert!(ok, "{out}");
    assert!(
        out.contains("1 suppressed address(es) skipped"),
        "the erased address was not recognised after the rotation:\n{out}"
    );
    let (_, shown) = cli_with_keys(
        &config,
        &key_b,
        &[key_a],
        &["subscribers", "show", "gone@example.org"],
    );
    assert!(!shown.contains("morning-meditation"), "{shown}");

    // Someone erased after the rotation is suppressed too (written under B).
    let (ok, out) = cli_with_keys(
        &config,
        &key_b,
        &[key_a],
        &["subscribers", "erase", "stays@example.org"],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli_with_keys(&config, &key_b, &[key_a], &import);
    assert!(ok, "{out}");
    assert!(out.contains("2 suppressed address(es) skipped"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// No secret in logs, errors or `config check`
// ---------------------------------------------------------------------------------------------

/// Owner content with a link inside a block helper.
const NEWSLETTER_WITH_A_HELPER: &str = "---\n\
subject: Morning practice\n\
---\n\
Good morning, {{#if name}}{{name}}{{else}}friend{{/if}}.\n\
\n\
{{#if preferences_url}}Choose what you receive on [your page]({{preferences_url}}).{{/if}}\n\
\n\
[Leave this list]({{unsubscribe_url}})\n";

const SMTP_USER: &str = "owner";
const SMTP_PASSWORD: &str = "smtp-Pa55word-kept-out-of-logs";

/// Everything a child process writes, both streams, as it arrives.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn drain(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let sink = self.0.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }

    fn push(&self, text: &str) {
        self.0.lock().unwrap().push_str(text);
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A `sangha` command with the committed config and `env`.
fn sangha(env: &[(String, String)], args: &[&str]) -> Command {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sangha"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Every secret that must never be printed, with a name for the failure message: the value
/// itself and the forms it travels in (base64 in SMTP AUTH, hex of key bytes, any 16-character
/// piece of a key).
fn forms_of_secrets(secrets: &[(&str, String)]) -> Vec<(String, String)> {
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut needles = Vec::new();
    for (name, value) in secrets {
        needles.push((name.to_string(), value.clone()));
        if name.contains("key") {
            for (i, window) in value.as_bytes().windows(16).enumerate() {
                let piece = String::from_utf8_lossy(window).into_owned();
                needles.push((format!("{name} (chars {i}..{})", i + 16), piece));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            needles.push((format!("{name} (hex)"), hex[..32].to_owned()));
        }
    }
    needles.push((
        "SMTP AUTH PLAIN".into(),
        b64(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}").as_bytes()),
    ));
    needles.push(("SMTP AUTH LOGIN".into(), b64(SMTP_PASSWORD.as_bytes())));
    needles
}

fn assert_no_secret(what: &str, text: &str, needles: &[(String, String)]) {
    for (name, needle) in needles {
        if let Some(at) = text.find(needle.as_str()) {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "{what} contains the {name}: {}",
                &text[start..end.min(start + 600)]
            );
        }
    }
}

/// A PostgreSQL URL with a password in it (the CI cluster trusts local connections, so the
/// password is carried but never checked); SQLite URLs are kept as they are.
fn with_database_password(url: &str, password: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgres") => match rest.split_once('@') {
            Some((user, host)) if !user.contains(':') => {
                format!("{scheme}://{user}:{password}@{host}")
            }
            _ => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

async fn no_secret_reaches_the_logs_at_debug_level(backend: Backend) {
    no_secret_reaches_the_logs(backend, "debug", "text").await;
}

async fn no_secret_reaches_the_logs_at_trace_level(backend: Backend) {
    no_secret_reaches_the_logs(backend, "trace", "text").await;
}

async fn no_secret_reaches_the_json_logs_at_trace_level(backend: Backend) {
    no_secret_reaches_the_logs(backend, "trace", "json").await;
}

/// The JSON log lines of `logged` (every line of serve's and the CLI's stderr with
/// `[log] format = "json"`): each one object, web lines carrying their request id and route
/// pattern, delivery lines their delivery and send ids.
fn assert_json_lines(logged: &str) {
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l}: {e}"))
        })
        .collect();
    assert!(lines.len() > 20, "few JSON lines:\n{logged}");
    for line in logged.lines().filter(|l| !l.starts_with('{')) {
        assert!(
            !line.contains("TRACE") && !line.contains("DEBUG") && !line.contains(" INFO "),
            "a text log line among the JSON ones: {line}"
        );
    }
    for v in &lines {
        assert!(
            v["level"].is_string() && v["timestamp"].is_string() && v["target"].is_string(),
            "{v}"
        );
    }
    let span = |v: &serde_json::Value, name: &str| -> Option<serde_json::Value> {
        v["spans"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    };
    let request_ids: std::collections::HashSet<String> = lines
        .iter()
        .filter_map(|v| span(v, "request"))
        .filter(|s| s["route"] == "/confirm/{token}")
        .map(|s| s["request_id"].as_str().expect("a request id").to_owned())
        .collect();
    assert!(
        request_ids.len() >= 2,
        "the confirm page's GET and POST, each with its own request id: {request_ids:?}"
    );
    assert!(request_ids.iter().all(|id| id.len() == 16));
    let newsletter = lines
        .iter()
        .filter_map(|v| span(v, "delivery"))
        .find(|s| s["send_id"].is_i64())
        .unwrap_or_else(|| panic!("no line of the newsletter's delivery:\n{logged}"));
    assert!(newsletter["delivery_id"].is_i64(), "{newsletter}");
}

/// Signs someone up, confirms, sends them a newsletter over authenticated SMTP and lets them
/// leave, all through a `sangha serve` child process logging at `level`; then looks for every
/// secret and every token in what it printed.
async fn no_secret_reaches_the_logs(backend: Backend, level: &str, format: &str) {
    let smtp = TestSmtpServer::builder()
        .credentials(SMTP_USER, SMTP_PASSWORD)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&backend, dir.path()).await;
    // A data folder serve creates itself, to see its permissions.
    let data_dir = dir.path().join("data");
    let db_password = "pg-Secret-in-the-url";
    let database_url = with_database_password(&config.database.url, db_password);
    let token_key = TokenKey::generate().to_base64();
    let previous_key = TokenKey::generate().to_base64();
    let env: Vec<(String, String)> = [
        ("RUST_LOG", level.to_owned()),
        ("SANGHA__LOG__FORMAT", format.to_owned()),
        ("SANGHA__DATA_DIR", data_dir.display().to_string()),
        ("SANGHA__DATABASE__URL", database_url.clone()),
        ("SANGHA__TOKENS__KEY", token_key.clone()),
        (
            "SANGHA__TOKENS__PREVIOUS_KEYS",
            format!("[\"{previous_key}\"]"),
        ),
        ("SANGHA__SERVER__BIND", "127.0.0.1:0".to_owned()),
        ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
        ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__SMTP__PORT", smtp.port().to_string()),
        ("SANGHA__SMTP__TLS", "none".to_owned()),
        ("SANGHA__SMTP__USERNAME", SMTP_USER.to_owned()),
        ("SANGHA__SMTP__PASSWORD", SMTP_PASSWORD.to_owned()),
        ("SANGHA__WORKER__POLL_INTERVAL_MS", "50".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let log = Captured::default();

    let mut child = sangha(&env, &["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sangha serve");
    log.drain(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            log.push(&format!("{line}\n"));
            if let Some(rest) = line.strip_prefix("Sangha is listening on ") {
                return rest.to_owned();
            }
        }
        panic!("serve exited before listening:\n{}", log.text());
    })
    .await
    .expect("serve starts");
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            sink.push(&format!("{line}\n"));
        }
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(&data_dir.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "the data folder is its owner's only");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{address}{path}");
        async move { http.get(url).send().await.unwrap().status() }
    };
    let post = |path: String, body: &'static str| {
        let http = http.clone();
        let url = format!("{address}{path}");
        async move {
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // Sign up and confirm through the link of the email that came over SMTP.
    let r = post(
        "/subscribe".into(),
        "email=seeker%40example.org&offerings=morning-meditation",
    )
    .await;
    assert_eq!(r, StatusCode::SEE_OTHER);
    let confirmation = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(confirmation.len(), 1, "{}", log.text());
    let confirm = confirm_path_in(&confirmation[0].data);
    assert_eq!(get(confirm.clone()).await, StatusCode::OK);
    assert_eq!(post(confirm.clone(), "").await, StatusCode::OK);

    // A newsletter, scheduled from the command line (whose output counts too).
    // Links also go through a block helper, which handlebars would log at debug level.
    let content = dir.path().join("morning.md");
    std::fs::write(&content, NEWSLETTER_WITH_A_HELPER).unwrap();
    let out = sangha(
        &env,
        &[
            "schedule",
            "--offering",
            "morning-meditation",
            "--content",
            content.to_str().unwrap(),
            "--now",
        ],
    )
    .output()
    .await
    .unwrap();
    log.push(&String::from_utf8_lossy(&out.stdout));
    log.push(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", log.text());
    let messages = smtp.wait_for_messages(2, DEADLINE).await;
    assert_eq!(messages.len(), 2, "{}", log.text());
    let newsletter = &messages[1].data;
    let unsubscribe = link_path_in(newsletter, "/unsubscribe/");
    let preferences = link_path_in(newsletter, "/preferences/");
    assert_eq!(get(preferences.clone()).await, StatusCode::OK);
    assert_eq!(get(unsubscribe.clone()).await, StatusCode::OK);
    assert_eq!(
        post(unsubscribe.clone(), "List-Unsubscribe=One-Click").await,
        StatusCode::OK
    );
    // A refused token is logged as refused, without the token.
    let mut tampered = unsubscribe.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'x' { 'y' } else { 'x' });
    assert_eq!(get(tampered.clone()).await, StatusCode::NOT_FOUND);

    // Stop, and let the output streams finish.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("serve stops")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", log.text());
    let logged = eventually_async(DEADLINE, || async {
        let text = log.text();
        text.contains("shutting down").then_some(text)
    })
    .await
    .unwrap_or_else(|| log.text());

    // The logs are really at `level`, and requests are logged by their route pattern.
    let marker = level.to_ascii_uppercase();
    assert!(logged.contains(&marker), "no {marker} line:\n{logged}");
    assert!(logged.contains("/confirm/{token}"), "{logged}");
    assert!(logged.contains("/unsubscribe/{token}"), "{logged}");
    if format == "json" {
        assert_json_lines(&logged);
    }

    let mut secrets: Vec<(&str, String)> = vec![
        ("SMTP password", SMTP_PASSWORD.to_owned()),
        ("token key", token_key.clone()),
        ("previous token key", previous_key.clone()),
        ("confirmation token", token_of(&confirm).to_owned()),
        ("unsubscribe token", token_of(&unsubscribe).to_owned()),
        ("preferences token", token_of(&preferences).to_owned()),
        ("tampered token", token_of(&tampered).to_owned()),
    ];
    if database_url.contains(db_password) {
        secrets.push(("database password", db_password.to_owned()));
    }
    let needles = forms_of_secrets(&secrets);
    assert_no_secret(
        &format!("the output at RUST_LOG={level}, {format} logs"),
        &logged,
        &needles,
    );

    // `config check` with the same environment shows every secret as [redacted].
    let out = sangha(&env, &["config", "check"]).output().await.unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("[redacted]"), "{printed}");
    assert_no_secret("config check", &printed, &needles);
}

/// A database that cannot be reached: start fails, and the error names the database without
/// its password, even at `RUST_LOG=trace`. (The pool gives up after its 30 s acquire timeout.)
#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("RUST_LOG", "trace"),
        ("SANGHA__DATA_DIR", dir.path().to_str().unwrap()),
        (
            "SANGHA__DATABASE__URL",
            "postgres://sangha:dbsecret-unreachable@127.0.0.1:1/x",
        ),
        ("SANGHA__SERVER__BIND", "127.0.0.1:0"),
        // Give up on the unreachable server quickly.
        ("SANGHA__DATABASE__CONNECT_TIMEOUT_SECONDS", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        sangha(&env, &["serve"]).output(),
    )
    .await
    .expect("serve gives up on an unreachable database")
    .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("127.0.0.1:1"), "{printed}");
    assert!(!printed.contains("dbsecret"), "{printed}");
}
