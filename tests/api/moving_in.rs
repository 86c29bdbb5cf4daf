//! Moving in and out: `sangha subscribers import` of Mailchimp, listmonk, Substack and
//! Buttondown exports (fixtures in `tests/fixtures/import/`, built from each tool's documented
//! columns), and `sangha subscribers export --format mailchimp|listmonk` read back.

use std::path::{Path, PathBuf};

use crate::backend_tests;
use crate::import::{detail, import, statuses};
use crate::support::{Backend, TestApp, stderr, stdout};

backend_tests!(
    mailchimp_files_move_in_with_their_statuses_and_consent,
    listmonk_statuses_map_onto_ours_and_blocklisted_is_suppressed,
    substack_email_disabled_stays_unsubscribed,
    buttondown_rows_never_confirmed_are_skipped_by_line,
    a_foreign_file_without_offerings_needs_the_offering_flag,
    the_format_can_be_forced_and_a_wrong_one_is_refused,
    malformed_foreign_rows_name_their_line,
    a_second_import_of_the_same_export_changes_nothing,
    an_unsubscribe_in_the_file_leaves_a_later_confirmation_here_alone,
    mailchimp_and_listmonk_exports_import_back_as_the_same_people,
);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

fn imported(app: &TestApp, path: &Path, extra: &[&str]) -> (String, String) {
    let out = import(app, path, extra);
    assert!(out.status.success(), "{}", stderr(&out));
    (stdout(&out), stderr(&out))
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn write_file(app: &TestApp, name: &str, content: &str) -> PathBuf {
    let path = app.dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

async fn mailchimp_files_move_in_with_their_statuses_and_consent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let offering = ["--offering", "morning-meditation"];
    let (report, _) = imported(
        &app,
        &fixture("mailchimp_subscribed_members_export.csv"),
        &offering,
    );
    assert!(
        report.contains("2 row(s) read from a mailchimp export"),
        "{report}"
    );
    assert!(
        report.contains("  2 confirmed, with the consent mailchimp recorded"),
        "{report}"
    );
    // Dora is here before the move; cleaned in Mailchimp, she leaves.
    app.confirmed_subscriber("dora@example.org", &["morning-meditation"])
        .await;
    let (report, _) = imported(
        &app,
        &fixture("mailchimp_unsubscribed_members_export.csv"),
        &offering,
    );
    assert!(
        report.contains("  1 unsubscribed: kept so they are never mailed"),
        "{report}"
    );
    let (report, _) = imported(&app, &fixture("mailchimp_cleaned_members_export.csv"), &[]);
    assert!(
        report.contains("  1 suppressed: cleaned, bounced or blocklisted in mailchimp"),
        "{report}"
    );
    assert!(report.contains("  0 confirmed"), "{report}");

    // A tag that names an offering decides it; a row without one joins --offering.
    assert_eq!(
        statuses(&app, "anna@example.org").await,
        ["guided-meditations:confirmed"]
    );
    assert_eq!(
        statuses(&app, "bela@example.org").await,
        ["morning-meditation:confirmed"]
    );
    assert_eq!(
        statuses(&app, "carla@example.org").await,
        ["morning-meditation:unsubscribed"]
    );
    assert_eq!(
        statuses(&app, "dora@example.org").await,
        ["morning-meditation:unsubscribed"]
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM suppressions WHERE reason = 'bounced'"
        )
        .await,
        1
    );

    let anna = detail(&app, "anna@example.org").await.unwrap();
    assert_eq!(anna.subscriber.name.as_deref(), Some("Anna Devi"));
    assert_eq!(anna.subscriber.timezone.as_deref(), Some("Europe/Berlin"));
    let consent = &anna.consents[0];
    assert_eq!(consent.action, "import");
    assert_eq!(consent.at, ms("2023-03-01T09:05:00Z"));
    assert_eq!(consent.ip.as_deref(), Some("203.0.113.8"));
    assert_eq!(consent.offerings, ["guided-meditations"]);
    assert_eq!(
        consent.source,
        "mailchimp import of mailchimp_subscribed_members_export.csv: \
         OPTIN_TIME 2023-03-01T09:00:00Z, OPTIN_IP 203.0.113.7, \
         CONFIRM_TIME 2023-03-01T09:05:00Z, CONFIRM_IP 203.0.113.8"
    );
    // Without a confirmation time, the opt-in's time and IP; a zone that is none is left out.
    let bela = detail(&app, "bela@example.org").await.unwrap();
    assert_eq!(bela.consents[0].at, ms("2023-04-02T10:00:00Z"));
    assert_eq!(bela.consents[0].ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(bela.subscriber.timezone, None);
    let carla = detail(&app, "carla@example.org").await.unwrap();
    assert_eq!(
        carla.subscriber.name, None,
        "nothing but the address is kept"
    );
    assert_eq!(carla.consents[0].action, "unsubscribe");
    assert_eq!(carla.consents[0].at, ms("2024-01-10T08:00:00Z"));

    // A send reaches the confirmed people only.
    let content = app.write_content("m.md", "---\nsubject: Breathe\n---\nSit quietly.\n");
    let morning = app.schedule_now("morning-meditation", &content);
    let guided = app.schedule_now("guided-meditations", &content);
    app.wait_for_send_done(morning).await;
    app.wait_for_send_done(guided).await;
    let sent: Vec<String> = app
        .outbox()
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .filter(|m| m.contains("Sit quietly"))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (email, mailed) in [
        ("anna@example.org", true),
        ("bela@example.org", true),
        ("carla@example.org", false),
        ("dora@example.org", false),
    ] {
        let to = |m: &String| m.lines().any(|l| l.starts_with("To:") && l.contains(email));
        assert_eq!(sent.iter().any(to), mailed, "{email}");
    }
}

async fn listmonk_statuses_map_onto_ours_and_blocklisted_is_suppressed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (report, _) = imported(
        &app,
        &fixture("listmonk_subscribers.csv"),
        &[
            "--offering",
            "morning-meditation",
            "--offering",
            "conscious-awakening",
        ],
    );
    assert!(
        report.contains("3 row(s) read from a listmonk export"),
        "{report}"
    );
    assert!(report.contains("  1 confirmed,"), "{report}");
    assert!(report.contains("  1 unsubscribed:"), "{report}");
    assert!(report.contains("  1 suppressed:"), "{report}");
    assert_eq!(
        statuses(&app, "ella@example.org").await,
        [
            "conscious-awakening:confirmed",
            "morning-meditation:confirmed"
        ]
    );
    let ella = detail(&app, "ella@example.org").await.unwrap();
    assert_eq!(ella.subscriber.timezone.as_deref(), Some("Asia/Kolkata"));
    assert_eq!(ella.consents[0].at, ms("2022-05-01T04:30:00.123Z"));
    assert!(
        ella.consents[0]
            .source
            .starts_with("listmonk import of listmonk_subscribers.csv: status enabled, created_at"),
        "{}",
        ella.consents[0].source
    );
    assert_eq!(
        statuses(&app, "fay@example.org").await,
        [
            "conscious-awakening:unsubscribed",
            "morning-meditation:unsubscribed"
        ]
    );
    assert!(detail(&app, "gita@example.org").await.is_none());
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM suppressions WHERE reason = 'owner'"
        )
        .await,
        1
    );
}

async fn substack_email_disabled_stays_unsubscribed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (report, _) = imported(
        &app,
        &fixture("substack_subscribers.csv"),
        &["--offering", "guided-meditations"],
    );
    assert!(
        report.contains("2 row(s) read from a substack export"),
        "{report}"
    );
    assert_eq!(
        statuses(&app, "hana@example.org").await,
        ["guided-meditations:confirmed"]
    );
    let hana = detail(&app, "hana@example.org").await.unwrap();
    assert_eq!(hana.consents[0].at, ms("2021-06-01T12:00:00Z"));
    assert_eq!(hana.consents[0].ip, None);
    assert_eq!(
        statuses(&app, "ines@example.org").await,
        ["guided-meditations:unsubscribed"]
    );
}

async fn buttondown_rows_never_confirmed_are_skipped_by_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (report, errors) = imported(&app, &fixture("buttondown_subscribers.csv"), &[]);
    assert!(
        report.contains("6 row(s) read from a buttondown export"),
        "{report}"
    );
    assert!(report.contains("  1 confirmed,"), "{report}");
    assert!(report.contains("  1 unsubscribed:"), "{report}");
    assert!(
        report.contains("  4 row(s) skipped, listed above by line: 2 not valid, 2 not imported"),
        "{report}"
    );
    assert!(
        errors.contains("line 4: never confirmed their address in buttondown (unactivated)"),
        "{errors}"
    );
    assert!(
        errors.contains("line 5: buttondown marked the signup as spam"),
        "{errors}"
    );
    assert!(
        errors.contains("line 6: subscriber_type: `wizard` is not one of"),
        "{errors}"
    );
    assert!(errors.contains("line 7: email:"), "{errors}");
    assert!(
        errors.contains("creation_date: `someday` is not a date and time"),
        "{errors}"
    );
    assert_eq!(
        statuses(&app, "jana@example.org").await,
        ["morning-meditation:confirmed"]
    );
    assert_eq!(
        statuses(&app, "kali@example.org").await,
        ["morning-meditation:unsubscribed"]
    );
    for skipped in ["luz@example.org", "mo@example.org", "nora@example.org"] {
        assert!(detail(&app, skipped).await.is_none(), "{skipped}");
    }
}

async fn a_foreign_file_without_offerings_needs_the_offering_flag(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let out = import(&app, &fixture("substack_subscribers.csv"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is a substack export without an offering column")
            && err.contains("--offering SLUG"),
        "{err}"
    );
    let out = import(
        &app,
        &fixture("substack_subscribers.csv"),
        &["--offering", "no-such-thing"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("there is no offering `no-such-thing`"),
        "{}",
        stderr(&out)
    );
    // A Mailchimp row whose tags name no offering is reported by line.
    let (_, errors) = imported(
        &app,
        &fixture("mailchimp_subscribed_members_export.csv"),
        &[],
    );
    assert!(
        errors.contains(
            "line 3: offerings: none of the row's tags names an offering, and no --offering"
        ),
        "{errors}"
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM subscribers").await, 1);
}

async fn the_format_can_be_forced_and_a_wrong_one_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let out = import(
        &app,
        &fixture("listmonk_subscribers.csv"),
        &["--format", "mailchimp", "--offering", "morning-meditation"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 1: no `email address` column, which a mailchimp export has"),
        "{err}"
    );
    // Forced to ours, a foreign header gets our header's error, as before.
    let out = import(
        &app,
        &fixture("listmonk_subscribers.csv"),
        &["--format", "sangha"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown column `uuid`"),
        "{}",
        stderr(&out)
    );
    // A file of ours cannot take --offering, nor a foreign one --confirmed.
    let ours = write_file(
        &app,
        "ours.csv",
        "email,name,timezone,offerings\na@example.org,,,morning-meditation\n",
    );
    let out = import(&app, &ours, &["--offering", "morning-meditation"]);
    assert!(
        stderr(&out).contains("--offering is for other tools' exports"),
        "{}",
        stderr(&out)
    );
    let out = import(
        &app,
        &fixture("substack_subscribers.csv"),
        &[
            "--confirmed",
            "--source",
            "x",
            "--offering",
            "morning-meditation",
        ],
    );
    assert!(
        stderr(&out).contains("--confirmed is for sangha files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM subscribers").await, 0);
}

async fn malformed_foreign_rows_name_their_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut bytes = b"uuid,email,name,attributes,status,created_at,updated_at\r\n\
        1,ok@example.org,Ok,{},enabled,2022-01-01 00:00:00+00:00,\r\n\
        2,short@example.org\r\n\
        3,json@example.org,J,{not json,enabled,,\r\n\
        4,state@example.org,S,{},frozen,,\r\n\
        5,when@example.org,W,{},enabled,tomorrow,\r\n"
        .to_vec();
    bytes.extend_from_slice(b"6,utf@example.org,\xff\xfe,{},enabled,,\r\n");
    bytes.extend_from_slice(b"7,open@example.org,\"never closed,{},enabled,,\r\n");
    let path = app.dir.path().join("bad.csv");
    std::fs::write(&path, bytes).unwrap();
    let out = import(&app, &path, &["--offering", "morning-meditation"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let errors = stderr(&out);
    for expected in [
        "line 3: expected 7 fields, found 2",
        "line 4: attributes: not JSON",
        "line 5: status: `frozen` is not one of enabled, disabled, blocklisted",
        "line 6: created_at: `tomorrow` is not a date and time",
        "line 7: name: not valid UTF-8 text",
    ] {
        assert!(errors.contains(expected), "{expected}: {errors}");
    }
    assert_eq!(
        statuses(&app, "ok@example.org").await,
        ["morning-meditation:confirmed"]
    );
    // A Mailchimp IP that is not one.
    let header = "Email Address,First Name,Last Name,OPTIN_TIME,OPTIN_IP,TAGS\n";
    let path = write_file(
        &app,
        "ip.csv",
        &format!("{header}x@example.org,,,,not-an-ip,morning-meditation\n"),
    );
    let out = import(&app, &path, &["--strict"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 2: OPTIN_IP: `not-an-ip` is not an IP address"),
        "{}",
        stderr(&out)
    );
    assert!(detail(&app, "x@example.org").await.is_none());
}

async fn a_second_import_of_the_same_export_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let files = [
        "mailchimp_subscribed_members_export.csv",
        "mailchimp_unsubscribed_members_export.csv",
        "mailchimp_cleaned_members_export.csv",
    ];
    for file in files {
        imported(&app, &fixture(file), &["--offering", "morning-meditation"]);
    }
    let consents = count(&app, "SELECT COUNT(*) FROM consents").await;
    let (report, _) = imported(
        &app,
        &fixture(files[0]),
        &["--offering", "morning-meditation"],
    );
    assert!(report.contains("  0 confirmed"), "{report}");
    assert!(
        report.contains("  2 already here as the file says: unchanged"),
        "{report}"
    );
    let (report, _) = imported(
        &app,
        &fixture(files[1]),
        &["--offering", "morning-meditation"],
    );
    assert!(report.contains("  0 unsubscribed"), "{report}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM consents").await, consents);
    // Someone who left here is not brought back by the old tool's list.
    let carla = detail(&app, "carla@example.org").await.unwrap();
    assert_eq!(carla.consents.len(), 1);
    let path = write_file(
        &app,
        "again.csv",
        "Email Address,First Name,Last Name,TAGS\ncarla@example.org,Carla,,morning-meditation\n\
         dora@example.org,Dora,,morning-meditation\n",
    );
    let (report, _) = imported(&app, &path, &[]);
    assert!(
        report.contains("  1 confirmed in mailchimp but had left here: kept unsubscribed"),
        "{report}"
    );
    assert!(
        report.contains("  1 on the suppression list here"),
        "{report}"
    );
    assert_eq!(
        statuses(&app, "carla@example.org").await,
        ["morning-meditation:unsubscribed"]
    );
    assert!(detail(&app, "dora@example.org").await.is_none());
}

async fn an_unsubscribe_in_the_file_leaves_a_later_confirmation_here_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Carla left Mailchimp in January 2024 and has since signed up here herself.
    app.confirmed_subscriber("carla@example.org", &["morning-meditation"])
        .await;
    app.confirmed_subscriber("lena@example.org", &["morning-meditation"])
        .await;
    let path = write_file(
        &app,
        "unsub.csv",
        &format!(
            "Email Address,First Name,Last Name,UNSUB_TIME,TAGS\n\
             carla@example.org,,,2024-01-10 08:00:00,\n\
             lena@example.org,,,{},\n",
            // Lena left there after she confirmed here: that word is the later one.
            jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_hours(1))
                .unwrap()
                .strftime("%Y-%m-%d %H:%M:%S")
        ),
    );
    let (report, _) = imported(&app, &path, &["--offering", "morning-meditation"]);
    assert!(report.contains("  1 unsubscribed"), "{report}");
    assert_eq!(
        statuses(&app, "carla@example.org").await,
        ["morning-meditation:confirmed"]
    );
    assert_eq!(
        statuses(&app, "lena@example.org").await,
        ["morning-meditation:unsubscribed"]
    );
}

async fn mailchimp_and_listmonk_exports_import_back_as_the_same_people(backend: Backend) {
    let old = TestApp::spawn(backend.clone()).await;
    let ours = write_file(
        &old,
        "ours.csv",
        "email,name,timezone,offerings\n\
         anna@example.org,Anna Maria Devi,Europe/Berlin,morning-meditation;guided-meditations\n\
         formula@example.org,=HYPERLINK(\"x\"),,conscious-awakening\n\
         left@example.org,Left,,guided-meditations\n",
    );
    let out = import(&old, &ours, &["--confirmed", "--source", "first list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    old.signup("pending@example.org", &["morning-meditation"])
        .await;
    let out = old.cli(&["subscribers", "remove", "left@example.org"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let export = |args: &[&str]| {
        let mut all = vec!["subscribers", "export"];
        all.extend_from_slice(args);
        let out = old.cli(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let subscribed = export(&["--format", "mailchimp"]);
    assert_eq!(
        subscribed.lines().next(),
        Some("Email Address,First Name,Last Name,TAGS,TIMEZONE,OPTIN_TIME,CONFIRM_TIME")
    );
    assert!(
        subscribed.contains("anna@example.org,Anna,Maria Devi,\"guided-meditations,morning-meditation\",Europe/Berlin,"),
        "{subscribed}"
    );
    assert!(
        !subscribed.contains("pending@") && !subscribed.contains("left@"),
        "{subscribed}"
    );
    let unsubscribed = export(&["--format", "mailchimp", "--status", "unsubscribed"]);
    assert!(
        unsubscribed
            .lines()
            .next()
            .unwrap()
            .ends_with(",UNSUB_TIME"),
        "{unsubscribed}"
    );
    assert_eq!(unsubscribed.lines().count(), 2, "{unsubscribed}");
    let listmonk = export(&["--format", "listmonk"]);
    assert_eq!(
        listmonk.lines().next(),
        Some("email,name,status,attributes")
    );
    assert!(
        listmonk.contains(
            "anna@example.org,Anna Maria Devi,enabled,\"{\"\"offerings\"\":[\"\"guided-meditations\"\",\"\"morning-meditation\"\"],\"\"timezone\"\":\"\"Europe/Berlin\"\"}\""
        ),
        "{listmonk}"
    );
    assert!(
        listmonk.contains("left@example.org,Left,disabled,"),
        "{listmonk}"
    );
    assert!(!listmonk.contains("pending@"), "{listmonk}");
    // Written to a file, the count is told.
    let out = old.cli(&[
        "subscribers",
        "export",
        "--format",
        "listmonk",
        "-o",
        old.dir.path().join("l.csv").to_str().unwrap(),
    ]);
    assert!(
        stdout(&out).contains("3 subscriber(s) written to"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("1 left out"), "{}", stdout(&out));

    let expect = [
        (
            "anna@example.org",
            vec![
                "guided-meditations:confirmed",
                "morning-meditation:confirmed",
            ],
        ),
        ("formula@example.org", vec!["conscious-awakening:confirmed"]),
        ("left@example.org", vec!["guided-meditations:unsubscribed"]),
    ];
    // Mailchimp's two files, then listmonk's one, each into a fresh app: no --offering needed.
    for files in [
        vec![("mc-sub.csv", &subscribed), ("mc-unsub.csv", &unsubscribed)],
        vec![("lm.csv", &listmonk)],
    ] {
        let new = TestApp::spawn(backend.clone()).await;
        for (name, text) in files {
            let path = write_file(&new, name, text);
            let (_, errors) = imported(&new, &path, &[]);
            assert!(errors.is_empty(), "{errors}");
        }
        for (email, want) in &expect {
            assert_eq!(&statuses(&new, email).await, want, "{email}");
        }
        assert!(detail(&new, "pending@example.org").await.is_none());
        let anna = detail(&new, "anna@example.org").await.unwrap();
        assert_eq!(anna.subscriber.name.as_deref(), Some("Anna Maria Devi"));
        assert_eq!(anna.subscriber.timezone.as_deref(), Some("Europe/Berlin"));
        let formula = detail(&new, "formula@example.org").await.unwrap();
        assert_eq!(
            formula.subscriber.name.as_deref(),
            Some("=HYPERLINK(\"x\")")
        );
    }
}
