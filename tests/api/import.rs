//! `sangha subscribers import` and `export`: CSV in and out, through the command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sangha::domain::{EmailAddress, SubscriptionStatus};
use sangha::store::{ConsentMeta, SubscriberDetail};

use crate::backend_tests;
use crate::support::{Backend, TestApp, stderr, stdout};

backend_tests!(
    a_good_file_imports_people_as_pending_without_any_email,
    confirmed_without_a_source_is_refused_before_the_file_is_read,
    confirmed_with_a_source_confirms_and_records_the_source,
    bad_rows_are_reported_by_line_and_the_others_imported,
    strict_imports_nothing_when_any_row_is_bad,
    a_file_without_the_expected_header_is_refused,
    the_same_address_twice_is_merged_and_a_second_import_changes_nothing,
    an_erased_address_is_not_brought_back,
    existing_people_keep_their_name_confirmation_and_unsubscriptions,
    an_export_imports_into_a_fresh_app_as_the_same_people,
    twenty_thousand_rows_import_in_batches,
    an_address_repeated_in_a_later_batch_counts_as_one_person,
);

/// A CSV header line and the rows after it, as a spreadsheet saves them (`\r\n`).
const HEADER: &str = "email,name,timezone,offerings";

fn write_file(app: &TestApp, name: &str, content: &[u8]) -> PathBuf {
    let path = app.dir.path().join(name);
    std::fs::write(&path, content).expect("write csv");
    path
}

pub(crate) fn import(app: &TestApp, path: &Path, extra: &[&str]) -> std::process::Output {
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["subscribers", "import", path];
    args.extend_from_slice(extra);
    app.cli(&args)
}

pub(crate) async fn detail(app: &TestApp, email: &str) -> Option<SubscriberDetail> {
    let email = EmailAddress::parse(email).unwrap();
    app.store().subscriber_detail(&email).await.unwrap()
}

/// `slug:status` of each subscription of `email`, sorted.
pub(crate) async fn statuses(app: &TestApp, email: &str) -> Vec<String> {
    let detail = detail(app, email)
        .await
        .unwrap_or_else(|| panic!("{email} was not imported"));
    let mut out: Vec<String> = detail
        .subscriber
        .subscriptions
        .iter()
        .map(|s| format!("{}:{}", s.offering, s.status))
        .collect();
    out.sort();
    out
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

fn now_ms() -> i64 {
    sangha::clock::Clock::System.now_ms()
}

async fn a_good_file_imports_people_as_pending_without_any_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let csv = format!(
        "{HEADER}\n\
         radha@example.org,\"Devi, Radha \"\"Shakti\"\"\",Asia/Kathmandu,morning-meditation\n\
         lila@example.org,,,guided-meditations; Conscious-Awakening\n\
         mira@example.org,Mira,,orgasmic-queen\n"
    );
    let path = write_file(&app, "people.csv", csv.as_bytes());
    let out = import(&app, &path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("3 row(s) read"), "{text}");
    assert!(
        text.contains("3 new subscriber(s) imported as pending; they receive no email"),
        "{text}"
    );

    let radha = detail(&app, "radha@example.org").await.unwrap();
    assert_eq!(
        radha.subscriber.name.as_deref(),
        Some("Devi, Radha \"Shakti\"")
    );
    assert_eq!(radha.subscriber.timezone.as_deref(), Some("Asia/Kathmandu"));
    assert_eq!(
        statuses(&app, "lila@example.org").await,
        ["conscious-awakening:pending", "guided-meditations:pending"]
    );
    // A course that is not on the signup page can be imported: it is the owner's list.
    assert_eq!(
        statuses(&app, "mira@example.org").await,
        ["orgasmic-queen:pending"]
    );
    let consent = &radha.consents[0];
    assert_eq!(consent.action, "import");
    assert_eq!(consent.source, "import of people.csv");
    assert_eq!(consent.offerings, ["morning-meditation"]);
    assert_eq!((&consent.ip, &consent.user_agent), (&None, &None));
    assert_eq!(consent.text_hash.len(), 64);

    // Nothing is queued for them: no confirmation email.
    assert_eq!(count(&app, "deliveries").await, 0);
    let list = stdout(&app.cli(&["subscribers", "list"]));
    assert!(list.contains("3 subscriber(s)"), "{list}");
}

async fn confirmed_without_a_source_is_refused_before_the_file_is_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The file does not even exist: the options are refused first.
    let missing = app.dir.path().join("missing.csv");
    let out = import(&app, &missing, &["--confirmed"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--source"), "{err}");
    assert!(!err.contains("missing.csv"), "{err}");

    let path = write_file(
        &app,
        "p.csv",
        format!("{HEADER}\na@example.org,,,morning-meditation\n").as_bytes(),
    );
    let out = import(&app, &path, &["--confirmed"]);
    assert!(!out.status.success());
    assert_eq!(count(&app, "subscribers").await, 0);
    let out = import(&app, &path, &["--confirmed", "--source", "  "]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--source"), "{}", stderr(&out));
    assert_eq!(count(&app, "subscribers").await, 0);
}

async fn confirmed_with_a_source_confirms_and_records_the_source(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = write_file(
        &app,
        "retreat.csv",
        format!(
            "{HEADER}\r\nsita@example.org,Sita,Europe/Berlin,morning-meditation;guided-meditations\r\n"
        )
        .as_bytes(),
    );
    let source = "signup sheet, retreat May 2024";
    let out = import(&app, &path, &["--confirmed", "--source", source]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 new subscriber(s) imported as confirmed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        statuses(&app, "sita@example.org").await,
        [
            "guided-meditations:confirmed",
            "morning-meditation:confirmed"
        ]
    );
    let sita = detail(&app, "sita@example.org").await.unwrap();
    assert!(
        sita.subscriber
            .subscriptions
            .iter()
            .all(|s| s.confirmed_at.is_some())
    );
    let consent = &sita.consents[0];
    assert_eq!(consent.action, "import");
    assert_eq!(consent.source, source);
    assert_eq!(
        consent.offerings,
        ["morning-meditation", "guided-meditations"]
    );
    // The hash names the words of the source, as a signup's names the consent text.
    let expected: String = <sha2::Sha256 as sha2::Digest>::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(consent.text_hash, expected);

    let shown = stdout(&app.cli(&["subscribers", "show", "sita@example.org"]));
    assert!(shown.contains(source), "{shown}");
    assert_eq!(count(&app, "deliveries").await, 0);
}

/// Ten rows over thirteen lines, `\r\n` line ends: six bad rows (on lines 3, 5, 6, 8, 11 and
/// 12), a name that spans lines 6 and 7, and a blank line 9.
fn file_with_bad_rows() -> Vec<u8> {
    let mut csv = Vec::new();
    for line in [
        HEADER.as_bytes(),
        b"good1@example.org,Anna,Europe/Berlin,morning-meditation",
        b"not-an-email,Bad,,morning-meditation",
        b"good2@example.org,\"Devi, Shakti\",,morning-meditation;guided-meditations",
        b"good3@example.org,Lila,,moonlight-yoga",
        b"ctrl@example.org,\"Two\r\nlines\",,morning-meditation",
        b"short@example.org,Short,morning-meditation",
        b"",
        b"good4@example.org,,Asia/Kathmandu,conscious-awakening",
        b"tz@example.org,Tee,Mars/Olympus,morning-meditation",
        b"utf@example.org,\xff\xfe,,morning-meditation",
        b"good5@example.org,,,morning-meditation",
    ] {
        csv.extend_from_slice(line);
        csv.extend_from_slice(b"\r\n");
    }
    csv
}

const BAD_LINES: [u32; 6] = [3, 5, 6, 8, 11, 12];

fn reported_lines(err: &str) -> Vec<u32> {
    err.lines()
        .filter_map(|l| l.strip_prefix("line "))
        .filter_map(|l| l.split(':').next()?.parse().ok())
        .collect()
}

async fn bad_rows_are_reported_by_line_and_the_others_imported(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = write_file(&app, "mixed.csv", &file_with_bad_rows());
    let out = import(&app, &path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(reported_lines(&err), BAD_LINES, "{err}");
    let line = |n: u32| {
        err.lines()
            .find(|l| l.starts_with(&format!("line {n}:")))
            .unwrap()
            .to_owned()
    };
    assert!(line(3).contains("email"), "{err}");
    assert!(line(5).contains("moonlight-yoga"), "{err}");
    assert!(line(6).contains("name"), "{err}");
    assert!(line(8).contains("expected 4 fields, found 3"), "{err}");
    assert!(line(11).contains("Mars/Olympus"), "{err}");
    assert!(line(12).contains("UTF-8"), "{err}");

    let text = stdout(&out);
    assert!(text.contains("10 row(s) read"), "{text}");
    assert!(text.contains("4 new subscriber(s)"), "{text}");
    assert!(text.contains("6 row(s) skipped as not valid"), "{text}");
    for good in ["good1", "good2", "good4", "good5"] {
        assert!(detail(&app, &format!("{good}@example.org")).await.is_some());
    }
    assert_eq!(count(&app, "subscribers").await, 4);
}

async fn strict_imports_nothing_when_any_row_is_bad(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = write_file(&app, "mixed.csv", &file_with_bad_rows());
    let out = import(&app, &path, &["--strict"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(reported_lines(&err), BAD_LINES, "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(count(&app, "subscribers").await, 0);
    assert_eq!(count(&app, "consents").await, 0);

    // A clean file goes through with --strict.
    let path = write_file(
        &app,
        "clean.csv",
        format!("{HEADER}\nclean@example.org,,,morning-meditation\n").as_bytes(),
    );
    let out = import(&app, &path, &["--strict"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count(&app, "subscribers").await, 1);
}

async fn a_file_without_the_expected_header_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (name, content) in [
        (
            "renamed.csv",
            "mail,name,timezone,offerings\na@example.org,,,morning-meditation\n",
        ),
        (
            "missing.csv",
            "email,name,offerings\na@example.org,,morning-meditation\n",
        ),
        ("no-header.csv", "a@example.org,,,morning-meditation\n"),
        ("empty.csv", ""),
    ] {
        let path = write_file(&app, name, content.as_bytes());
        let out = import(&app, &path, &[]);
        assert!(!out.status.success(), "{name} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("email,name,timezone,offerings"),
            "{name}: {err}"
        );
    }
    assert_eq!(count(&app, "subscribers").await, 0);
}

async fn the_same_address_twice_is_merged_and_a_second_import_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let merged = write_file(
        &app,
        "merged.csv",
        format!(
            "{HEADER}\n\
             one@example.org,,,morning-meditation\n\
             one@example.org,Radha,Asia/Kathmandu,guided-meditations\n"
        )
        .as_bytes(),
    );
    let out = import(&app, &merged, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 new subscriber(s)"), "{text}");
    assert!(text.contains("1 row(s) repeated an address"), "{text}");
    let one = detail(&app, "one@example.org").await.unwrap();
    assert_eq!(one.subscriber.name.as_deref(), Some("Radha"));
    assert_eq!(one.subscriber.timezone.as_deref(), Some("Asia/Kathmandu"));
    assert_eq!(
        statuses(&app, "one@example.org").await,
        ["guided-meditations:pending", "morning-meditation:pending"]
    );
    assert_eq!(one.consents.len(), 1);

    // Importing the same file again changes nothing and records nothing.
    let out = import(&app, &merged, &[]);
    let text = stdout(&out);
    assert!(text.contains("0 new subscriber(s)"), "{text}");
    assert!(
        text.contains("0 existing subscriber(s) updated, 1 unchanged"),
        "{text}"
    );
    assert_eq!(count(&app, "consents").await, 1);

    // The domain is normalised, so this is the same person: they get the new offering and keep
    // the name and zone they have.
    let again = write_file(
        &app,
        "again.csv",
        format!("{HEADER}\none@EXAMPLE.org,Someone Else,Europe/Berlin,conscious-awakening\n")
            .as_bytes(),
    );
    let out = import(&app, &again, &[]);
    assert!(
        stdout(&out).contains("1 existing subscriber(s) updated"),
        "{}",
        stdout(&out)
    );
    let one = detail(&app, "one@example.org").await.unwrap();
    assert_eq!(one.subscriber.name.as_deref(), Some("Radha"));
    assert_eq!(one.subscriber.timezone.as_deref(), Some("Asia/Kathmandu"));
    assert_eq!(statuses(&app, "one@example.org").await.len(), 3);
    assert_eq!(count(&app, "subscribers").await, 1);
}

async fn an_erased_address_is_not_brought_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("gone@example.org", &["morning-meditation"])
        .await;
    let gone = EmailAddress::parse("gone@example.org").unwrap();
    let id = detail(&app, "gone@example.org")
        .await
        .unwrap()
        .subscriber
        .id;
    let hash = app.state.links().email_hash(&gone);
    assert!(
        app.store()
            .erase_subscriber(id, &hash, now_ms())
            .await
            .unwrap()
    );

    let path = write_file(
        &app,
        "old-list.csv",
        format!(
            "{HEADER}\n\
             gone@example.org,Gone,,morning-meditation\n\
             stays@example.org,,,morning-meditation\n"
        )
        .as_bytes(),
    );
    let out = import(&app, &path, &["--confirmed", "--source", "old list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 suppressed address(es) skipped"), "{text}");
    assert!(text.contains("1 new subscriber(s)"), "{text}");
    // Not an error: nothing about it on the error stream.
    assert!(!stderr(&out).contains("line"), "{}", stderr(&out));
    assert!(detail(&app, "gone@example.org").await.is_none());
    assert!(detail(&app, "stays@example.org").await.is_some());
}

async fn existing_people_keep_their_name_confirmation_and_unsubscriptions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = write_file(
        &app,
        "first.csv",
        format!(
            "{HEADER}\n\
             keep@example.org,Original,,morning-meditation;guided-meditations\n\
             left@example.org,,,morning-meditation;guided-meditations\n"
        )
        .as_bytes(),
    );
    let out = import(&app, &first, &["--confirmed", "--source", "first list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left = detail(&app, "left@example.org").await.unwrap();
    let leaving = ConsentMeta {
        ip: None,
        user_agent: None,
        text_hash: String::new(),
        source: sangha::domain::ConsentSource::Email,
    };
    app.store()
        .unsubscribe(left.subscriber.id, None, &leaving, now_ms())
        .await
        .unwrap();

    let second = write_file(
        &app,
        "second.csv",
        format!(
            "{HEADER}\n\
             keep@example.org,New Name,Europe/Berlin,morning-meditation;conscious-awakening\n\
             left@example.org,Left,,morning-meditation;guided-meditations\n"
        )
        .as_bytes(),
    );
    // Without --confirmed, and then with it: neither moves anyone backwards.
    for extra in [&[][..], &["--confirmed", "--source", "second list"][..]] {
        let out = import(&app, &second, extra);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("2 subscription(s) kept unsubscribed"),
            "{text}"
        );
    }
    let keep = detail(&app, "keep@example.org").await.unwrap();
    assert_eq!(keep.subscriber.name.as_deref(), Some("Original"));
    assert_eq!(keep.subscriber.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(
        statuses(&app, "keep@example.org").await,
        [
            "conscious-awakening:confirmed",
            "guided-meditations:confirmed",
            "morning-meditation:confirmed"
        ]
    );
    let left = detail(&app, "left@example.org").await.unwrap();
    assert!(
        left.subscriber
            .subscriptions
            .iter()
            .all(|s| s.status == SubscriptionStatus::Unsubscribed)
    );
    // Nothing was added to the person who left: no name, no import consent.
    assert_eq!(left.subscriber.name, None);
    assert_eq!(
        left.consents
            .iter()
            .filter(|c| c.action == "import")
            .count(),
        1
    );
}

async fn an_export_imports_into_a_fresh_app_as_the_same_people(backend: Backend) {
    let old = TestApp::spawn(backend.clone()).await;
    let path = write_file(
        &old,
        "all.csv",
        format!(
            "{HEADER}\n\
             anna@example.org,\"Anna \"\"Ananda\"\", Devi\",Europe/Berlin,morning-meditation;guided-meditations\n\
             formula@example.org,=HYPERLINK(\"x\"),,conscious-awakening\n\
             partly@example.org,,Asia/Kathmandu,morning-meditation;orgasmic-queen\n\
             left@example.org,Left,,guided-meditations\n"
        )
        .as_bytes(),
    );
    let out = import(&old, &path, &["--confirmed", "--source", "first list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A pending signup too.
    old.signup("pending@example.org", &["morning-meditation"])
        .await;
    let leaving = ConsentMeta {
        ip: None,
        user_agent: None,
        text_hash: String::new(),
        source: sangha::domain::ConsentSource::Email,
    };
    let morning = old
        .store()
        .offering_by_slug(&sangha::domain::Slug::parse("morning-meditation").unwrap())
        .await
        .unwrap()
        .unwrap();
    let partly = detail(&old, "partly@example.org").await.unwrap();
    old.store()
        .unsubscribe(partly.subscriber.id, Some(morning.id), &leaving, now_ms())
        .await
        .unwrap();
    let left = detail(&old, "left@example.org").await.unwrap();
    old.store()
        .unsubscribe(left.subscriber.id, None, &leaving, now_ms())
        .await
        .unwrap();

    let out = old.cli(&["subscribers", "export"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = stdout(&out);
    let mut lines = exported.lines();
    assert_eq!(
        lines.next(),
        Some(
            "email,name,timezone,offerings,statuses,created_at,confirmed_at,consent_at,consent_source"
        )
    );
    let partly_line = exported.lines().find(|l| l.starts_with("partly@")).unwrap();
    assert!(
        partly_line
            .contains(",orgasmic-queen,morning-meditation:unsubscribed;orgasmic-queen:confirmed,"),
        "{partly_line}"
    );
    assert!(partly_line.ends_with(",first list"), "{partly_line}");
    // A spreadsheet would run this name as a formula: it is defused.
    assert!(
        exported.contains("formula@example.org,\"'=HYPERLINK(\"\"x\"\")\""),
        "{exported}"
    );
    // Rows come ordered by address.
    let emails: Vec<&str> = exported
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut sorted = emails.clone();
    sorted.sort();
    assert_eq!(emails, sorted);
    assert_eq!(emails.len(), 5);

    let to_file = old.dir.path().join("export.csv");
    let out = old.cli(&[
        "subscribers",
        "export",
        "--output",
        to_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("5 subscriber(s)"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&to_file).unwrap(), exported);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&to_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "an export is readable only by its owner");
    }

    let new = TestApp::spawn(backend).await;
    let path = write_file(&new, "from-old.csv", exported.as_bytes());
    let out = import(
        &new,
        &path,
        &["--strict", "--confirmed", "--source", "old server"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("4 new subscriber(s)"), "{text}");
    assert!(
        text.contains("1 row(s) skipped: the person had left every offering"),
        "{text}"
    );

    // The same people, names, zones and offerings (those not left).
    let people = |rows: Vec<sangha::store::SubscriberRow>| {
        rows.into_iter()
            .map(|r| {
                let mut offerings: Vec<String> = r
                    .subscriptions
                    .into_iter()
                    .filter(|s| s.status != SubscriptionStatus::Unsubscribed)
                    .map(|s| s.offering)
                    .collect();
                offerings.sort();
                (r.email, r.name, r.timezone, offerings)
            })
            .filter(|(_, _, _, offerings)| !offerings.is_empty())
            .collect::<Vec<_>>()
    };
    let before = people(old.store().list_subscribers(None, None).await.unwrap());
    let after = people(new.store().list_subscribers(None, None).await.unwrap());
    assert_eq!(before.len(), 4);
    assert_eq!(before, after);
    let formula = detail(&new, "formula@example.org").await.unwrap();
    assert_eq!(
        formula.subscriber.name.as_deref(),
        Some("=HYPERLINK(\"x\")")
    );
}

async fn twenty_thousand_rows_import_in_batches(backend: Backend) {
    const ROWS: usize = 20_000;
    let app = TestApp::spawn(backend).await;
    let zones = ["Europe/Berlin", "Asia/Kathmandu", "", "America/New_York"];
    let offerings = [
        "morning-meditation",
        "guided-meditations;conscious-awakening",
        "orgasmic-queen;morning-meditation",
    ];
    let mut csv = String::with_capacity(ROWS * 80);
    csv.push_str(HEADER);
    csv.push('\n');
    for i in 0..ROWS {
        csv.push_str(&format!(
            "person{i}@example.org,Person {i},{},{}\n",
            zones[i % zones.len()],
            offerings[i % offerings.len()]
        ));
    }
    let path = write_file(&app, "big.csv", csv.as_bytes());
    let started = Instant::now();
    let out = import(&app, &path, &["--confirmed", "--source", "generated"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("imported {ROWS} rows in {took:?}");
    assert!(
        stdout(&out).contains(&format!("{ROWS} new subscriber(s)")),
        "{}",
        stdout(&out)
    );
    assert_eq!(count(&app, "subscribers").await, ROWS as i64);
    assert_eq!(count(&app, "consents").await, ROWS as i64);
    // 1 + 2 + 2 subscriptions per three rows (20,000 = 3 × 6,666 + 2).
    assert_eq!(count(&app, "subscriptions").await, 6_666 * 5 + 1 + 2);
    assert_eq!(
        statuses(&app, "person19999@example.org").await,
        [
            "conscious-awakening:confirmed",
            "guided-meditations:confirmed"
        ]
    );
}

/// Batches are written while the next ones are read, two at once on PostgreSQL. A batch that
/// repeats an address of one still being written waits for it, so the report and the records
/// are the same as if every batch were written after the one before.
async fn an_address_repeated_in_a_later_batch_counts_as_one_person(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let csv = format!(
        "{HEADER}\n\
         a@example.org,,,morning-meditation\n\
         b@example.org,,,morning-meditation\n\
         c@example.org,,,morning-meditation\n\
         a@example.org,,,guided-meditations\n\
         d@example.org,,,morning-meditation\n\
         e@example.org,,,morning-meditation\n\
         b@example.org,,,morning-meditation\n\
         f@example.org,,,morning-meditation\n\
         a@example.org,Radha,,morning-meditation\n\
         g@example.org,,,morning-meditation\n"
    );
    let path = write_file(&app, "repeats.csv", csv.as_bytes());
    // Batches of two: (a b) (c a) (d e) (b f) (a g).
    let out = import(&app, &path, &["--batch-size", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("10 row(s) read"), "{text}");
    assert!(text.contains("7 new subscriber(s)"), "{text}");
    // a got an offering, then a name; b had nothing new.
    assert!(
        text.contains("2 existing subscriber(s) updated, 1 unchanged"),
        "{text}"
    );
    assert!(!text.contains("merged"), "{text}");
    assert_eq!(count(&app, "subscribers").await, 7);
    assert_eq!(count(&app, "subscriptions").await, 8);
    // One consent per new person and one per update.
    assert_eq!(count(&app, "consents").await, 9);
    let a = detail(&app, "a@example.org").await.unwrap();
    assert_eq!(a.subscriber.name.as_deref(), Some("Radha"));
    assert_eq!(
        statuses(&app, "a@example.org").await,
        ["guided-meditations:pending", "morning-meditation:pending"]
    );
}
