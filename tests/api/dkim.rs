//! DKIM: every kind of message (confirmation, campaign send, course lesson, test-send) goes
//! out signed with an RSA and an Ed25519 key, and an independent verifier (dkimpy, Python's
//! DKIM library) accepts both signatures on the bytes the SMTP server received, and rejects
//! them once a byte of the body or of a signed header changes. `sangha dkim keygen` and
//! `sangha dkim show` print the DNS records; keys are secrets and are read once at start.

use std::path::Path;
use std::process::Command;

use sangha::app::Runtime;
use sangha::clock::Clock;
use sangha::config::DkimKeyConfig;
use sangha::mail::{Dkim, DkimAlgorithm, generate_key};

use crate::support::kinds::{DkimKeys, EveryKind, every_kind_signed};
use crate::support::{Backend, run_cli, run_cli_with, stderr, stdout, test_config};

/// A body that tests what canonicalization and transfer encoding do: non-ASCII text, a line
/// longer than 998 characters, lines that start with a dot.
const TRICKY: &str = "---\n\
subject: \"Übung für {{name}}: Ruhe, 静けさ\"\n\
---\n\
Atme ein, atme aus, {{name}}. Grüße aus dem Tempel: 心を静かに。\n\
\n\
.a line that starts with a dot\n\
\n\
..and one that starts with two\n\
\n\
LONGLINE\n\
\n\
[Leave this list]({{unsubscribe_url}})\n";

/// The Python with dkimpy, or `None` (the test is skipped with a notice) unless
/// `SANGHA_TEST_REQUIRE_DKIMPY=1` (as in `.ci/run`) makes its absence a failure.
fn python_with_dkimpy() -> Option<&'static str> {
    for python in ["/usr/bin/python3", "python3"] {
        let found = Command::new(python)
            .args(["-c", "import dkim"])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some(python);
        }
    }
    if std::env::var("SANGHA_TEST_REQUIRE_DKIMPY").as_deref() == Ok("1") {
        panic!("SANGHA_TEST_REQUIRE_DKIMPY=1 but dkimpy is missing (apt-get install python3-dkim)");
    }
    eprintln!("dkimpy is missing (apt-get install python3-dkim): skipping the DKIM verification");
    None
}

/// dkimpy's verdict on every signature of `message`: (all passed, one line per signature).
fn dkimpy(python: &str, message: &[u8], records: &[String]) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim/verify.py");
    let out = Command::new(python)
        .arg(script)
        .arg(file.path())
        .args(records)
        .output()
        .expect("run dkimpy");
    let report = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.success(), report)
}

/// `message` with the first occurrence of `from` replaced by `to` (same length or not).
fn tampered(message: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = message
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the message", String::from_utf8_lossy(from)));
    [&message[..at], to, &message[at + from.len()..]].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_kind_carries_both_signatures_and_dkimpy_verifies_the_received_bytes() {
    let Some(python) = python_with_dkimpy() else {
        return;
    };
    let keys = DkimKeys::generate("example.com");
    let long_line = "Om shanti ".repeat(120).replace(' ', "\u{a0}");
    let kinds = every_kind_signed(&keys, &TRICKY.replace("LONGLINE", &long_line)).await;
    let EveryKind {
        lesson,
        campaign,
        test_send,
        ..
    } = &kinds;
    for (kind, message) in kinds.named() {
        let (ok, report) = dkimpy(python, &message.data, &keys.records);
        assert!(
            ok,
            "{kind}: dkimpy rejects it:\n{report}\n{}",
            message.data_lossy()
        );
        assert_eq!(
            report.lines().count(),
            2,
            "{kind}: two signatures:\n{report}"
        );
        assert!(
            report.contains("s=rsa1 a=rsa-sha256 c=relaxed/relaxed"),
            "{report}"
        );
        assert!(
            report.contains("s=ed1 a=ed25519-sha256 c=relaxed/relaxed"),
            "{report}"
        );
        for line in report.lines() {
            let h = line.split(" h=").nth(1).unwrap().to_ascii_lowercase();
            // From over-signed: twice in h=, once in the message.
            assert_eq!(h.matches("from").count(), 2, "{kind}: {h}");
            for name in [
                "to",
                "subject",
                "date",
                "message-id",
                "mime-version",
                "content-type",
                "list-id",
                "list-unsubscribe",
                "list-unsubscribe-post",
            ] {
                assert!(
                    h.split(':').any(|n| n == name),
                    "{kind}: {name} not in h={h}"
                );
            }
        }
    }
    let campaign_text = campaign.data_lossy();
    assert!(
        campaign_text.lines().any(|l| l.len() > 78),
        "the long line is kept long or encoded"
    );
    assert!(
        campaign
            .parsed()
            .body_text(0)
            .unwrap()
            .contains(".a line that starts with a dot"),
        "{campaign_text}"
    );
    assert!(
        campaign.parsed().subject().unwrap().contains("静けさ"),
        "{campaign_text}"
    );

    // Any change after signing breaks both signatures: one byte of the body, of the Subject.
    let body_at = campaign
        .data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let mut body_changed = campaign.data.clone();
    let last = body_changed.len() - 3;
    assert!(last > body_at);
    body_changed[last] ^= 0x01;
    let (ok, report) = dkimpy(python, &body_changed, &keys.records);
    assert!(!ok, "a changed body still verifies:\n{report}");
    assert_eq!(report.matches("fail").count(), 2, "{report}");
    let subject_changed = tampered(&test_send.data, b"Subject: ", b"Subject: X");
    let (ok, report) = dkimpy(python, &subject_changed, &keys.records);
    assert!(!ok, "a changed Subject still verifies:\n{report}");
    // And a second From, added below the first, is caught by the over-signing.
    let second_from = tampered(
        &lesson.data,
        b"\r\nFrom: ",
        b"\r\nFrom: evil@example.net\r\nFrom: ",
    );
    let (ok, report) = dkimpy(python, &second_from, &keys.records);
    assert!(!ok, "an added From still verifies:\n{report}");
}

#[tokio::test]
async fn dkim_keygen_writes_an_owner_only_key_prints_its_record_and_never_overwrites_without_force()
{
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&Backend::Sqlite, dir.path()).await;
    let domain = config.dkim_domain();
    let key = dir.path().join("dkim").join("s2026.pem");

    let out = run_cli(&config, &["dkim", "keygen", "--selector", "s2026"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("name:  s2026._domainkey.{domain}")),
        "{printed}"
    );
    assert!(
        printed.contains("[[dkim.keys]]\nselector = \"s2026\"\nfile = \"dkim/s2026.pem\""),
        "{printed}"
    );
    let value = printed
        .lines()
        .find_map(|l| l.strip_prefix("  value: "))
        .expect("a value line")
        .to_owned();
    // An RSA 2048 key is longer than one TXT string: quoted strings of at most 255 bytes.
    let strings: Vec<&str> = value.split("\" \"").collect();
    assert!(strings.len() >= 2, "{value}");
    assert!(value.starts_with("\"v=DKIM1; k=rsa; p="), "{value}");
    for s in &strings {
        assert!(s.trim_matches('"').len() <= 255, "{s}");
    }
    assert!(
        !printed.contains("PRIVATE KEY"),
        "the private key is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(key.parent().unwrap()), 0o700);
    }
    let first = std::fs::read(&key).unwrap();

    let again = run_cli(
        &config,
        &[
            "dkim",
            "keygen",
            "--selector",
            "s2026",
            "--algorithm",
            "ed25519",
        ],
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(std::fs::read(&key).unwrap(), first, "the key is untouched");

    let forced = run_cli(
        &config,
        &[
            "dkim",
            "keygen",
            "--selector",
            "s2026",
            "--algorithm",
            "ed25519",
            "--force",
        ],
    );
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(std::fs::read(&key).unwrap(), first);
    let ed_value = stdout(&forced)
        .lines()
        .find_map(|l| l.strip_prefix("  value: "))
        .unwrap()
        .to_owned();
    assert!(
        ed_value.starts_with("\"v=DKIM1; k=ed25519; p="),
        "{ed_value}"
    );

    // `dkim show` derives the same record from the configured key file.
    let keys = "[{selector=\"s2026\",file=\"dkim/s2026.pem\"}]".to_owned();
    let show = run_cli_with(&config, &["dkim", "show"], &[("SANGHA__DKIM__KEYS", keys)]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(
        stdout(&show).contains(&format!("value: {ed_value}")),
        "{}",
        stdout(&show)
    );

    let bad = run_cli(&config, &["dkim", "keygen", "--selector", "../escape"]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn a_missing_or_invalid_key_stops_the_start_naming_the_file_and_no_key_is_ever_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&Backend::Sqlite, dir.path()).await;
    let pem = generate_key(DkimAlgorithm::Ed25519).unwrap();
    let secret_line = pem.lines().nth(1).unwrap().to_owned();
    std::fs::write(dir.path().join("good.pem"), &pem).unwrap();
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let key = |selector: &str, file: &str| DkimKeyConfig {
        selector: selector.into(),
        file: file.into(),
    };

    config.dkim.keys = vec![key("good", "good.pem"), key("gone", "missing.pem")];
    let error = Runtime::open(config.clone(), Clock::System)
        .await
        .err()
        .unwrap();
    assert!(format!("{error:#}").contains("missing.pem"), "{error:#}");
    config.dkim.keys = vec![key("bad", "bad.pem")];
    let error = Runtime::open(config.clone(), Clock::System)
        .await
        .err()
        .unwrap();
    assert!(format!("{error:#}").contains("bad.pem"), "{error:#}");

    config.dkim.keys = vec![key("good", "good.pem")];
    let dkim = Dkim::from_config(&config).unwrap();
    let runtime = Runtime::open(config.clone(), Clock::System).await.unwrap();
    let env = [(
        "SANGHA__DKIM__KEYS",
        "[{selector=\"good\",file=\"good.pem\"}]".to_owned(),
    )];
    let check = run_cli_with(&config, &["config", "check"], &env);
    assert!(check.status.success(), "{}", stderr(&check));
    for text in [
        stdout(&check),
        stderr(&check),
        format!("{dkim:?}"),
        format!("{config:?}"),
        format!("{:?}", runtime.transport().unwrap()),
    ] {
        assert!(!text.contains(&secret_line), "a key leaked: {text}");
        assert!(!text.contains("PRIVATE KEY"), "a key leaked: {text}");
    }
    assert!(stdout(&check).contains("good.pem"), "{}", stdout(&check));
    assert!(!stdout(&check).contains("# warning"), "{}", stdout(&check));
    // Signing as another domain than From's is warned about, with its fix.
    let apart = run_cli_with(
        &config,
        &["config", "check"],
        &[
            env[0].clone(),
            ("SANGHA__DKIM__DOMAIN", "relay.example".to_owned()),
        ],
    );
    assert!(apart.status.success(), "{}", stderr(&apart));
    assert!(
        stdout(&apart)
            .contains("# warning: dkim.domain = \"relay.example\" is not the domain of mail.from"),
        "{}",
        stdout(&apart)
    );
    let missing = run_cli_with(
        &config,
        &["config", "check"],
        &[(
            "SANGHA__DKIM__KEYS",
            "[{selector=\"x\",file=\"nope.pem\"}]".to_owned(),
        )],
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("nope.pem"),
        "{}",
        stderr(&missing)
    );
}
