//! The first run on a fresh clone: `sangha serve` with the committed config.toml and nothing
//! else creates its data folder, database, token key and outbox; `config check` explains
//! itself; a bad configuration stops start naming the key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{DEADLINE, eventually, stderr, stdout};

fn fresh_clone() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("config.toml"), dir.path().join("config.toml")).unwrap();
    // The example course's lessons, which config.toml names, come with a clone too.
    let lessons = Path::new("courses/orgasmic-queen");
    std::fs::create_dir_all(dir.path().join(lessons)).unwrap();
    for entry in std::fs::read_dir(repo.join(lessons)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join(lessons).join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    dir
}

fn sangha(dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sangha"));
    cmd.current_dir(dir)
        .env_remove("SANGHA__DATABASE__URL")
        .env_remove("SANGHA__DATA_DIR")
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn serve_on_a_fresh_clone_creates_data_and_writes_mail_to_the_outbox() {
    let clone = fresh_clone();
    let mut child = sangha(clone.path())
        .arg("serve")
        // Port 0 so tests can run side by side; everything else is the committed default.
        .env("SANGHA__SERVER__BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("Sangha is listening on ") {
                return rest.to_owned();
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve starts in time");

    let data = clone.path().join("data");
    assert!(data.join("sangha.db").is_file());
    let key = data.join("token.key");
    assert!(key.is_file(), "token key generated");
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    let mode: String = {
        let store = sangha::store::Store::connect(
            &format!("sqlite://{}", data.join("sangha.db").display()),
            1,
        )
        .await
        .unwrap();
        store.journal_mode().await.unwrap().unwrap()
    };
    assert_eq!(mode, "wal");

    let http = reqwest::Client::new();
    let health = http.get(format!("{address}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let page = http
        .get(format!("{address}/subscribe"))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("Morning Meditation"));
    let r = http
        .post(format!("{address}/subscribe"))
        .form(&[
            ("email", "first@example.org"),
            ("offerings", "morning-meditation"),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let outbox = data.join("outbox");
    let eml = eventually(DEADLINE, || {
        std::fs::read_dir(&outbox)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| e.path())
    })
    .await
    .expect("a confirmation .eml in data/outbox");
    let raw = std::fs::read(eml).unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("To: first@example.org"));

    // SIGTERM stops it cleanly.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("serve stops after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let clone = fresh_clone();
    let out = sangha(clone.path())
        .args(["config", "check"])
        .env("SANGHA__SMTP__PASSWORD", "very-secret-password")
        .env("SANGHA__SMTP__PORT", "2525")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("port = 2525"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains("very-secret-password"), "{text}");
    assert!(!stderr(&out).contains("very-secret-password"));
}

#[tokio::test]
async fn a_bad_configuration_stops_start_naming_the_key() {
    let clone = fresh_clone();
    for (var, value, key) in [
        ("SANGHA__SMTP__HOTS", "x", "smtp.hots"),
        ("SANGHA__SMTP__TLS", "sometimes", "smtp.tls"),
        ("SANGHA__SERVER__BASE_URL", "localhost", "server.base_url"),
        ("SANGHA__TOKENS__KEY", "c2hvcnQ=", "tokens.key"),
    ] {
        let out = sangha(clone.path())
            .arg("serve")
            .env(var, value)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{var} accepted");
        assert!(stderr(&out).contains(key), "{var}: {}", stderr(&out));
    }
    // A missing secret: an SMTP user without a password.
    let out = sangha(clone.path())
        .arg("serve")
        .env("SANGHA__MAIL__TRANSPORT", "smtp")
        .env("SANGHA__SMTP__USERNAME", "owner")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("smtp.password"), "{}", stderr(&out));
    // A config file that does not exist is named.
    let out = sangha(clone.path())
        .args(["--config", "nowhere.toml", "config", "check"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nowhere.toml"));
    assert!(
        !clone.path().join("data").exists(),
        "nothing created on a failed start"
    );
}

/// Listening beyond this machine with an http base URL would put every email's links on the
/// network in clear text: `serve` refuses, says why and how to fix it, and starts only when
/// told `--insecure`.
#[tokio::test]
async fn serve_refuses_a_public_bind_with_an_http_base_url_unless_told_insecure() {
    let clone = fresh_clone();
    let public = |cmd: &mut tokio::process::Command| {
        cmd.env("SANGHA__SERVER__BIND", "0.0.0.0:0")
            .env("SANGHA__SERVER__BASE_URL", "http://news.example.org");
    };
    let mut cmd = sangha(clone.path());
    cmd.arg("serve");
    public(&mut cmd);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("serve refuses at once")
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("server.base_url"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
    assert!(
        !clone.path().join("data").join("sangha.db").exists(),
        "nothing is created before the refusal"
    );

    // https behind a proxy, or loopback: no question asked (the fresh-clone test above).
    let mut cmd = sangha(clone.path());
    cmd.args(["serve", "--insecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    public(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Sangha is listening on ") {
                return true;
            }
        }
        false
    })
    .await
    .expect("serve --insecure starts in time");
    assert!(listening, "serve --insecure exited before listening");
    child.kill().await.unwrap();
}
