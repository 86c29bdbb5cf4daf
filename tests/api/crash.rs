//! Crash safety: `sangha serve` is killed with SIGKILL in the middle of a send of thousands of
//! recipients and started again. From what the SMTP server received: nobody is missing, and
//! the only duplicates are messages that were in flight at the kill (at most one claimed
//! batch), each carrying the same Message-ID as its first copy.

use std::collections::HashMap;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::backend_tests;
use crate::support::smtp::TestSmtpServer;
use crate::support::{Backend, DEADLINE, TEST_TOKEN_KEY, eventually, run_cli, stderr, test_config};

backend_tests!(a_send_killed_midway_and_restarted_misses_nobody);

const RECIPIENTS: usize = 2000;
const BATCH: usize = 50;

fn serve(env: &[(String, String)]) -> Child {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    Command::new(env!("CARGO_BIN_EXE_sangha"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sangha serve")
}

async fn wait_listening(child: &mut Child) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Sangha is listening") {
                return;
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve starts");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

async fn a_send_killed_midway_and_restarted_misses_nobody(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&backend, dir.path()).await;
    let env: Vec<(String, String)> = [
        ("SANGHA__DATA_DIR", config.data_dir.display().to_string()),
        ("SANGHA__DATABASE__URL", config.database.url.clone()),
        ("SANGHA__TOKENS__KEY", TEST_TOKEN_KEY.to_owned()),
        ("SANGHA__SERVER__BIND", "127.0.0.1:0".to_owned()),
        ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
        ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__SMTP__PORT", server.port().to_string()),
        ("SANGHA__SMTP__TLS", "none".to_owned()),
        ("SANGHA__WORKER__POLL_INTERVAL_MS", "50".to_owned()),
        ("SANGHA__WORKER__BATCH_SIZE", BATCH.to_string()),
        // Short leases so the restarted process takes over the dead one's rows quickly.
        ("SANGHA__WORKER__LEASE_SECONDS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let csv = dir.path().join("people.csv");
    let mut rows = String::from("email,name,timezone,offerings\n");
    for i in 0..RECIPIENTS {
        rows.push_str(&format!(
            "p{i}@example.org,Person {i},,morning-meditation\n"
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    let out = run_cli(
        &config,
        &[
            "subscribers",
            "import",
            csv.to_str().unwrap(),
            "--confirmed",
            "--source",
            "crash test",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let content = dir.path().join("m.md");
    std::fs::write(&content, crate::sends::MORNING).unwrap();
    let out = run_cli(
        &config,
        &[
            "schedule",
            "--offering",
            "morning-meditation",
            "--content",
            content.to_str().unwrap(),
            "--now",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let send_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let mut child = serve(&env);
    wait_listening(&mut child).await;
    eventually(DEADLINE, || {
        (server.messages().len() >= RECIPIENTS / 3).then_some(())
    })
    .await
    .expect("the send gets going");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let at_kill = server.messages().len();
    assert!(
        at_kill < RECIPIENTS,
        "killed before the end ({at_kill} received)"
    );

    let mut child = serve(&env);
    wait_listening(&mut child).await;
    let done = crate::support::eventually_async(DEADLINE * 4, || async {
        let show = run_cli(&config, &["sends", "show", &send_id]);
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        text.contains("status:     done").then_some(text)
    })
    .await
    .expect("the send finishes after the restart");
    assert!(done.contains(&format!("sent: {RECIPIENTS}")), "{done}");
    child.start_kill().unwrap();

    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    for m in server.messages() {
        let id = m.parsed().message_id().unwrap().to_owned();
        copies.entry(m.rcpt_to[0].clone()).or_default().push(id);
    }
    assert_eq!(copies.len(), RECIPIENTS, "every recipient got the send");
    let duplicates: usize = copies.values().map(|c| c.len() - 1).sum();
    assert!(
        duplicates <= BATCH,
        "{duplicates} duplicates, more than the {BATCH} that can be in flight"
    );
    for (who, ids) in &copies {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{who} got different Message-IDs"
        );
    }
    eprintln!(
        "crash test: {at_kill} received before the kill, {duplicates} duplicate(s) after restart"
    );
}
