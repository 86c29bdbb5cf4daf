//! Test support: each test spawns the application on 127.0.0.1:0 with a database of its own
//! (a SQLite file in a temporary folder, or a fresh PostgreSQL database when
//! `TEST_DATABASE_URL` is set), and talks to it over HTTP and through the `sangha` binary.

#![allow(dead_code)]

pub mod dns;
pub mod imap;
pub mod kinds;
pub mod smtp;
pub mod test_ca;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sangha::app::Application;
use sangha::clock::Clock;
use sangha::config::{Config, TlsMode, TransportKind};
use sangha::store::Store;
use sangha::web::{AppState, SnsFetch};
use tokio::sync::oneshot;

/// How long a test waits for something that should happen soon.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A fixed base key so tests can forge tokens when they need to.
pub const TEST_TOKEN_KEY: &str = "dGVzdC10b2tlbi1rZXktdGhhdC1pcy1sb25nLWVub3VnaC0zMi1ieXRlcw==";

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL server to test against, from `TEST_DATABASE_URL`. When it is not set the
    /// PostgreSQL variant of each test is skipped, unless `SANGHA_TEST_REQUIRE_POSTGRES=1`
    /// (as in `.ci/run`), which makes the absence a failure.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                if std::env::var("SANGHA_TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("SANGHA_TEST_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set");
                }
                eprintln!("TEST_DATABASE_URL is not set: skipping the PostgreSQL variant");
                None
            }
        }
    }

    /// A database URL no other test uses.
    pub async fn fresh_database(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}/sangha.db", dir.display()),
            Backend::Postgres(admin_url) => {
                let name = format!("sangha_test_{:016x}", rand::random::<u64>());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
                )
                .await
                .expect("create test database");
                let (base, _) = admin_url
                    .rsplit_once('/')
                    .expect("URL with a database name");
                format!("{base}/{name}")
            }
        }
    }
}

/// Runs an async test body once per backend: `backend_tests!(a_test, another_test);` makes
/// `a_test::sqlite` and `a_test::postgres` from `async fn a_test(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = $crate::support::Backend::postgres() {
                        super::$name(backend).await;
                    }
                }
            }
        )+
    };
}

/// The committed `config.toml`, pointed at a fresh data folder and database.
pub async fn test_config(backend: &Backend, dir: &Path) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut config = Config::load_with_env(Some(&path), Vec::new()).expect("config.toml loads");
    // Owner-only, as `sangha` creates a data folder: a temporary folder may be open to others
    // (0755), which `sangha` warns about on every command.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .expect("an owner-only data folder");
    }
    config.data_dir = dir.to_owned();
    config.database.url = backend.fresh_database(dir).await;
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.tokens.key = Some(sangha::domain::TokenKey::from_base64(TEST_TOKEN_KEY).unwrap());
    config.worker.poll_interval_ms = 50;
    // Tests sign many people up from 127.0.0.1; the rate-limit test sets its own limit.
    config.signup.rate_limit_per_minute = 0;
    config.signup.signups_per_domain_per_network_per_hour = 0;
    config.mail.transport = TransportKind::File;
    config
}

/// A running application.
pub struct TestApp {
    pub address: String,
    /// `http://ADDR` of `GET /metrics`, when `[metrics] bind` is set.
    pub metrics_address: Option<String>,
    pub config: Config,
    pub state: AppState,
    pub clock: Clock,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What to change before the application starts.
pub struct Options {
    pub worker: bool,
    pub clock: Clock,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            worker: true,
            clock: Clock::System,
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Options::default(), |_| {}).await
    }

    /// An app whose tests step the scheduler and a worker themselves.
    pub async fn spawn_without_worker(backend: Backend) -> Self {
        Self::spawn_with(
            backend,
            Options {
                worker: false,
                ..Options::default()
            },
            |_| {},
        )
        .await
    }

    pub async fn spawn_with(
        backend: Backend,
        options: Options,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(&backend, dir.path()).await;
        configure(&mut config);
        Self::start_in(dir, config, options).await
    }

    /// Stops the application and starts it again on the same database and data folder, with
    /// its configuration changed by `configure`: as an owner does after fixing config.toml.
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Config)) -> Self {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the application stops")
                .expect("the application task");
        }
        let mut config = self.config.clone();
        configure(&mut config);
        let options = Options {
            worker: true,
            clock: self.clock.clone(),
        };
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, config, options).await
    }

    /// An app whose SES webhook fetches Amazon SNS URLs with `sns_fetch` (tests have no
    /// network).
    pub async fn spawn_with_sns_fetch(
        backend: Backend,
        sns_fetch: Arc<dyn SnsFetch>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(&backend, dir.path()).await;
        configure(&mut config);
        Self::start_with(dir, config, Options::default(), sns_fetch).await
    }

    async fn start_in(dir: tempfile::TempDir, config: Config, options: Options) -> Self {
        let sns_fetch = Arc::new(sangha::web::HttpsFetch::new());
        Self::start_with(dir, config, options, sns_fetch).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        config: Config,
        options: Options,
        sns_fetch: Arc<dyn SnsFetch>,
    ) -> Self {
        config.validate().expect("test config is valid");
        let mut app = Application::build_with(
            config.clone(),
            options.clock.clone(),
            options.worker,
            sns_fetch,
        )
        .await
        .expect("application starts");
        if !options.worker {
            // Such tests step the scheduler and a worker themselves.
            app = app.without_scheduler();
        }
        let address = format!("http://{}", app.local_addr());
        let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel();
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
            .expect("http client");
        Self {
            address,
            metrics_address,
            config,
            state,
            clock: options.clock,
            dir,
            http,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn store(&self) -> &Store {
        self.state.store()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_form(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "sangha-tests/1.0")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST form")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("user-agent", "sangha-tests/1.0")
            .json(body)
            .send()
            .await
            .expect("POST json")
    }

    /// Signs `email` up for `offerings` through the form.
    pub async fn signup(&self, email: &str, offerings: &[&str]) -> reqwest::Response {
        let mut body = format!("email={}", urlencode(email));
        for o in offerings {
            body.push_str(&format!("&offerings={o}"));
        }
        self.post_form("/subscribe", &body).await
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.config.outbox_dir()
    }

    /// The `.eml` files written so far, oldest first.
    pub fn outbox(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.outbox_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| (p.metadata().and_then(|m| m.modified()).expect("mtime"), p))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read(p).expect("read eml"))
            .collect()
    }

    /// Waits until the outbox holds at least `n` messages.
    pub async fn wait_for_outbox(&self, n: usize) -> Vec<Vec<u8>> {
        let outbox = eventually(DEADLINE, || {
            let files = self.outbox();
            (files.len() >= n).then_some(files)
        })
        .await;
        outbox.unwrap_or_else(|| {
            panic!(
                "expected {n} message(s) in the outbox, got {}",
                self.outbox().len()
            )
        })
    }

    /// The confirmation link in the `index`th message of the outbox (by time written: use it
    /// only when one signup is under way; see [`TestApp::confirmed_subscriber`] otherwise).
    pub async fn confirm_path(&self, index: usize) -> String {
        let messages = self.wait_for_outbox(index + 1).await;
        confirm_path_in(&messages[index])
    }

    /// Signs `email` up and confirms through the link in the email they receive.
    pub async fn confirmed_subscriber(&self, email: &str, offerings: &[&str]) {
        self.confirmed_subscriber_in(email, offerings, "").await;
    }

    /// As [`TestApp::confirmed_subscriber`], with the time zone the signup form sends.
    pub async fn confirmed_subscriber_in(&self, email: &str, offerings: &[&str], zone: &str) {
        let before = self.outbox().len();
        let mut body = format!("email={}&timezone={}", urlencode(email), urlencode(zone));
        for o in offerings {
            body.push_str(&format!("&offerings={o}"));
        }
        let r = self.post_form("/subscribe", &body).await;
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
        let needle = format!("To: {email}");
        let raw = eventually(DEADLINE, || {
            self.outbox()
                .into_iter()
                .skip(before)
                .find(|m| String::from_utf8_lossy(m).contains(&needle))
        })
        .await
        .unwrap_or_else(|| panic!("no confirmation email for {email}"));
        let path = confirm_path_in(&raw);
        let r = self.post_form(&path, "").await;
        assert_eq!(r.status(), reqwest::StatusCode::OK);
    }

    /// Writes a content file into the test's folder.
    pub fn write_content(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write content");
        path
    }

    /// `sangha schedule … --now`; returns the send id.
    pub fn schedule_now(&self, offering: &str, content: &Path) -> i64 {
        let out = self.cli(&[
            "schedule",
            "--offering",
            offering,
            "--content",
            content.to_str().unwrap(),
            "--now",
        ]);
        assert!(out.status.success(), "schedule failed: {}", stderr(&out));
        stdout(&out).trim().parse().expect("a send id")
    }

    /// Waits until the send is done (every delivery final).
    /// Waits until `n` deliveries (of `kind`, or any) are recorded as sent. A message reaches
    /// the outbox a moment before its batch is recorded, so seeing the file is not enough.
    pub async fn wait_for_sent(
        &self,
        kind: Option<sangha::domain::DeliveryKind>,
        n: i64,
    ) -> sangha::store::DeliveryCounts {
        eventually_async(DEADLINE, || async {
            let counts = self.store().delivery_counts(kind).await.unwrap();
            (counts.sent >= n).then_some(counts)
        })
        .await
        .unwrap_or_else(|| panic!("{n} deliveries were not recorded as sent"))
    }

    pub async fn wait_for_send_done(&self, id: i64) -> sangha::store::SendSummary {
        eventually_async(DEADLINE, || async {
            let s = self.store().send_summaries(Some(id)).await.unwrap().pop()?;
            (s.status == sangha::store::SendStatus::Done).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("send {id} did not finish"))
    }

    /// What the links of subscriber `id` are bound to, as the database has it.
    pub async fn link_of(&self, id: i64) -> sangha::domain::LinkTarget {
        let secret: i64 = sqlx::query_scalar("SELECT link_secret FROM subscribers WHERE id = $1")
            .bind(id)
            .fetch_one(self.store().pool())
            .await
            .expect("the subscriber's link secret");
        sangha::domain::LinkTarget { id, secret }
    }

    /// Runs the `sangha` binary against this application's database and data folder.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&self.config, args)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(DEADLINE, task).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs the binary with the committed config.toml and this config's database, data folder
/// and token key given through the environment, as an owner would.
pub fn run_cli(config: &Config, args: &[&str]) -> Output {
    run_cli_with(config, args, &[])
}

/// As [`run_cli`], with more environment variables.
pub fn run_cli_with(config: &Config, args: &[&str], env: &[(&str, String)]) -> Output {
    sangha_command(config, args, env)
        .env("SANGHA__TOKENS__KEY", TEST_TOKEN_KEY)
        .output()
        .expect("run sangha")
}

/// The `sangha` binary with the committed config.toml, this config's database and data folder
/// and `env` in the environment; no token key unless `env` gives one (it then uses
/// `data_dir/token.key`, as an owner's installation does by default).
pub fn sangha_command(
    config: &Config,
    args: &[&str],
    env: &[(&str, String)],
) -> std::process::Command {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sangha"));
    command
        // The machine's own trust-store variables would change what the SMTP tests see.
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("SANGHA__TOKENS__KEY")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .env("SANGHA__DATA_DIR", &config.data_dir)
        .env("SANGHA__DATABASE__URL", &config.database.url)
        .env("RUST_LOG", "warn");
    command
}

/// The environment that makes a `sangha` process send through the test SMTP server on `port`,
/// without TLS.
pub fn relay_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
        ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__SMTP__PORT", port.to_string()),
        ("SANGHA__SMTP__TLS", "none".to_owned()),
    ]
}

/// The configuration change that makes the application send through the test SMTP server on
/// `port`, without TLS, with a mailto unsubscribe address beside the link.
pub fn relay_config(port: u16) -> impl FnOnce(&mut Config) {
    move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = TlsMode::None;
        c.mail.unsubscribe_mailto = "leave@example.com".into();
    }
}

/// `sangha test-send` of `content` to owner@example.org for morning-meditation, with `env`.
pub fn test_send(config: &Config, content: &Path, env: &[(&str, String)]) -> Output {
    run_cli_with(
        config,
        &[
            "test-send",
            "--content",
            content.to_str().unwrap(),
            "--to",
            "owner@example.org",
            "--offering",
            "morning-meditation",
        ],
        env,
    )
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async `check` until it returns `Some` or the deadline passes.
pub async fn eventually_async<T, Fut>(
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `/confirm/…` path of the link in a raw message (the text part, decoded).
pub fn confirm_path_in(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a parsable message");
    let text = message.body_text(0).expect("a text part").into_owned();
    let start = text
        .find("/confirm/")
        .expect("a confirm link in the text part");
    text[start..]
        .split_whitespace()
        .next()
        .expect("link")
        .to_owned()
}

/// The path (`/unsubscribe/…`, `/preferences/…`) of the first link containing `marker` in the
/// text part of a message.
pub fn link_path_in(raw: &[u8], marker: &str) -> String {
    let message = mail_parser::MessageParser::default().parse(raw).unwrap();
    let text = message.body_text(0).unwrap().into_owned();
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} link"));
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_'))
        .collect()
}

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Every delivery of a send carries the Message-ID the outbox makes,
/// `<prefix.subscriber_id@message_id_domain>`, whichever path wrote it; `expected` rows.
pub async fn assert_message_ids_come_from_the_outbox(app: &TestApp, expected: usize) {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT d.message_id, se.message_id_prefix, d.subscriber_id
         FROM deliveries d JOIN sends se ON se.id = d.send_id",
    )
    .fetch_all(app.store().pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), expected, "{rows:?}");
    for (id, prefix, subscriber) in rows {
        assert_eq!(
            id,
            sangha::store::message_id(&prefix, subscriber, &app.config.message_id_domain())
        );
    }
}
