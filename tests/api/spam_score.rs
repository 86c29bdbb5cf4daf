//! Spam filters: every kind of message Sangha sends (confirmation, course lesson, campaign,
//! test-send), DKIM-signed, exactly as the SMTP server received it, scores at most 0 in
//! SpamAssassin's offline rules (`spamassassin -L -t`). A kind above 0 fails the test with the
//! rules that hit and their points.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::kinds::{DkimKeys, every_kind_signed};
use crate::support::{stderr, stdout};

/// A campaign as an owner writes one: the benchmark's content file, a few paragraphs of
/// Markdown with the recipient's name and a link to leave.
const CAMPAIGN: &str = include_str!("../../bench/content.md");

/// Whether `spamassassin` runs; when it does not, the test is skipped with a notice unless
/// `SANGHA_TEST_REQUIRE_SPAMASSASSIN=1` (as in `.ci/run`) makes its absence a failure.
fn spamassassin_found() -> bool {
    let found = Command::new("spamassassin")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var("SANGHA_TEST_REQUIRE_SPAMASSASSIN").as_deref() == Ok("1") {
        panic!(
            "SANGHA_TEST_REQUIRE_SPAMASSASSIN=1 but spamassassin is missing (apt-get install spamassassin)"
        );
    }
    if !found {
        eprintln!(
            "spamassassin is missing (apt-get install spamassassin): skipping the spam score"
        );
    }
    found
}

/// SpamAssassin's judgement of one message.
struct Verdict {
    score: f64,
    /// (points, rule, description), as the report lists them.
    rules: Vec<(f64, String, String)>,
    /// Everything spamassassin printed: the message with its headers and report.
    output: String,
}

impl Verdict {
    fn rules_hit(&self) -> String {
        self.rules
            .iter()
            .map(|(points, rule, description)| format!("  {points:5.1} {rule}  {description}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The `From ` line that opens message `index` of the mailbox given to spamassassin.
fn separator(index: usize) -> String {
    format!("From kind-{index}@sangha.test Thu Jan  1 00:00:00 1970\n")
}

/// Runs `spamassassin -L -t` (local rules only: no network tests, no DNS blocklists) once on
/// all `messages`, as a mailbox (`--mbox`: the rules are loaded once, which takes seconds),
/// with a home folder of its own, so that neither the user's preferences nor a Bayes database
/// learnt elsewhere change the scores, and nothing is written outside it. One verdict per
/// message, in order.
fn spamassassin(messages: &[&[u8]]) -> Vec<Verdict> {
    let mut mbox = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        // A body line starting with "From " would have to be quoted, changing the bytes.
        assert!(
            !message
                .split(|b| *b == b'\n')
                .any(|l| l.starts_with(b"From ")),
            "message {index} has a line starting with \"From \""
        );
        mbox.extend_from_slice(separator(index).as_bytes());
        mbox.extend_from_slice(message);
        mbox.extend_from_slice(b"\n");
    }
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new("spamassassin")
        .args(["-L", "-t", "--mbox"])
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run spamassassin");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&mbox));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let output = stdout(&out);
    // Each message comes back after its own `From ` line, not always in the order given.
    (0..messages.len())
        .map(|index| {
            let text = output
                .split_once(&separator(index))
                .map(|(_, rest)| rest.split("\nFrom kind-").next().unwrap())
                .filter(|text| text.contains("X-Spam-Status:"))
                .unwrap_or_else(|| {
                    panic!(
                        "spamassassin gave no verdict on message {index} ({}):\n{}{output}",
                        out.status,
                        stderr(&out)
                    )
                });
            Verdict {
                score: score_of(text),
                rules: rules_of(text),
                output: text.to_owned(),
            }
        })
        .collect()
}

/// The score in the `X-Spam-Status: No, score=-0.1 required=5.0 ...` header.
fn score_of(output: &str) -> f64 {
    let status = output
        .lines()
        .find_map(|l| l.strip_prefix("X-Spam-Status:"))
        .expect("an X-Spam-Status header");
    let score = status
        .split_whitespace()
        .find_map(|w| w.trim_end_matches(',').strip_prefix("score="))
        .unwrap_or_else(|| panic!("no score in X-Spam-Status:{status}"));
    score
        .parse()
        .unwrap_or_else(|_| panic!("score {score:?} is not a number"))
}

/// The rows of the report's table `pts rule name description`: the rules that hit.
fn rules_of(output: &str) -> Vec<(f64, String, String)> {
    let Some(table) = output
        .split_once("Content analysis details:")
        .and_then(|(_, rest)| rest.split_once("---- "))
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rows)| rows)
    else {
        return Vec::new();
    };
    let mut rules: Vec<(f64, String, String)> = Vec::new();
    for line in table.lines() {
        let mut words = line.split_whitespace();
        let (Some(first), Some(second)) = (words.next(), words.next()) else {
            break;
        };
        let description = words.collect::<Vec<_>>().join(" ");
        match first.parse::<f64>() {
            Ok(points) => rules.push((points, second.to_owned(), description)),
            // A description continued on the next line.
            Err(_) if line.starts_with("    ") => {
                if let Some(last) = rules.last_mut() {
                    last.2 = format!("{} {}", last.2, line.trim());
                }
            }
            Err(_) => break,
        }
    }
    rules
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_kind_signed_as_sent_scores_at_most_zero_in_spamassassin() {
    if !spamassassin_found() {
        return;
    }
    let keys = DkimKeys::generate("example.com");
    let kinds = every_kind_signed(&keys, CAMPAIGN).await;

    let named = kinds.named();
    let messages: Vec<&[u8]> = named.iter().map(|(_, m)| m.data.as_slice()).collect();
    let verdicts = named
        .iter()
        .map(|(kind, _)| *kind)
        .zip(spamassassin(&messages));
    let mut above_zero = Vec::new();
    for (kind, verdict) in verdicts {
        eprintln!(
            "{kind}: score {:.1}\n{}",
            verdict.score,
            verdict.rules_hit()
        );
        if verdict.score > 0.0 {
            above_zero.push(format!(
                "{kind} scores {:.1}:\n{}\n\n{}",
                verdict.score,
                verdict.rules_hit(),
                verdict.output
            ));
        }
    }
    assert!(
        above_zero.is_empty(),
        "message kinds above 0 in SpamAssassin:\n\n{}",
        above_zero.join("\n\n")
    );
}
