//! What a hostile probe found at the edges of the command line and the data folder: secrets in
//! printed database URLs, spreadsheet formulas in exports, huge CSV lines, colour codes in logs
//! that go to a file, echoed input in errors, and file permissions.

use std::path::Path;
use std::process::Output;

use sangha::domain::EmailAddress;

use crate::backend_tests;
use crate::support::{Backend, TEST_TOKEN_KEY, TestApp, stderr, stdout};

backend_tests!(
    every_text_column_of_an_export_is_defused_and_imports_back_unchanged,
    a_csv_row_longer_than_the_cap_is_refused_with_its_line_number,
    a_long_time_zone_is_not_echoed_back_by_the_signup_form_or_json,
);

/// Runs `sangha` with the committed config.toml, a data folder and a database URL, and
/// whatever else `env` sets.
fn sangha(data_dir: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    std::process::Command::new(env!("CARGO_BIN_EXE_sangha"))
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .env("SANGHA__DATA_DIR", data_dir)
        .env("SANGHA__DATABASE__URL", url)
        .env("SANGHA__TOKENS__KEY", TEST_TOKEN_KEY)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run sangha")
}

/// The secrets of [`SECRET_URL`]: none may appear in any output.
const SECRETS: [&str; 3] = ["userinfo-secret", "param-secret", "ssl-secret"];

/// A PostgreSQL URL with a password in every form sqlx and libpq take, on a port where nothing
/// listens.
const SECRET_URL: &str = "postgres://alice:userinfo-secret@127.0.0.1:1/sangha\
     ?sslmode=disable&password=param-secret&sslpassword=ssl-secret";

fn assert_no_secret(out: &Output) {
    for text in [stdout(out), stderr(out)] {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} was printed: {text}");
        }
    }
}

#[test]
fn config_check_prints_no_database_password_in_any_form() {
    let dir = tempfile::tempdir().unwrap();
    let out = sangha(dir.path(), SECRET_URL, &["config", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_secret(&out);
    let text = stdout(&out);
    // What is not secret is still shown, so the owner can see which database is meant.
    assert!(text.contains("alice"), "{text}");
    assert!(text.contains("127.0.0.1:1/sangha"), "{text}");
    assert!(text.contains("sslmode=disable"), "{text}");
}

#[test]
fn cannot_open_database_names_the_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // Whatever the log level: sqlx logs a connect parameter it does not know with its value.
    let timeout = [
        ("SANGHA__DATABASE__CONNECT_TIMEOUT_SECONDS", "2"),
        ("RUST_LOG", "trace"),
    ];
    let out = sangha(dir.path(), SECRET_URL, &["subscribers", "list"], &timeout);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot open database"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    assert_no_secret(&out);

    // A URL sqlx cannot read at all (a port that is not a number) is not shown either.
    let bad = "postgres://alice:userinfo-secret@127.0.0.1:port/sangha?password=param-secret";
    let out = sangha(dir.path(), bad, &["subscribers", "list"], &timeout);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_no_secret(&out);
}

/// True when a spreadsheet would run the cell as a formula (OWASP "CSV injection").
fn is_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

async fn every_text_column_of_an_export_is_defused_and_imports_back_unchanged(backend: Backend) {
    let old = TestApp::spawn(backend.clone()).await;
    // An address that is a formula is accepted at signup; names typed with a leading
    // apostrophe, one of them before a formula character.
    for (email, name) in [
        ("=cmd|'/Ccalc'!A0@csv.test", "=HYPERLINK(\"x\")"),
        ("radha@example.org", "'Radha"),
        ("quoted@example.org", "'=SUM(A1)"),
    ] {
        let r = old
            .post_form(
                "/subscribe",
                &format!(
                    "email={}&name={}&offerings=morning-meditation",
                    crate::support::urlencode(email),
                    crate::support::urlencode(name)
                ),
            )
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "{email}");
    }
    let formula_email = "=cmd|'/Ccalc'!A0@csv.test";
    // An import whose consent source is a formula.
    let file = old.dir.path().join("people.csv");
    std::fs::write(
        &file,
        "email,name,timezone,offerings\n+tag@example.org,-minus,,morning-meditation\n",
    )
    .unwrap();
    let out = old.cli(&[
        "subscribers",
        "import",
        file.to_str().unwrap(),
        "--confirmed",
        "--source",
        "=HYPERLINK(\"http://evil.test\")",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = old.cli(&["subscribers", "export"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = stdout(&out);
    let mut reader = csv::Reader::from_reader(exported.as_bytes());
    let mut rows = 0;
    for record in reader.records() {
        let record = record.unwrap();
        for cell in record.iter() {
            assert!(!is_formula(cell), "a formula cell `{cell}` in {exported}");
        }
        rows += 1;
    }
    assert_eq!(rows, 4, "{exported}");

    let new = TestApp::spawn(backend).await;
    let path = new.dir.path().join("from-old.csv");
    std::fs::write(&path, &exported).unwrap();
    let out = new.cli(&[
        "subscribers",
        "import",
        path.to_str().unwrap(),
        "--strict",
        "--confirmed",
        "--source",
        "old server",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (email, name) in [
        (formula_email, "=HYPERLINK(\"x\")"),
        ("radha@example.org", "'Radha"),
        ("quoted@example.org", "'=SUM(A1)"),
        ("+tag@example.org", "-minus"),
    ] {
        let address = EmailAddress::parse(email).unwrap();
        let detail = new
            .store()
            .subscriber_detail(&address)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{email} did not come back: {exported}"));
        assert_eq!(detail.subscriber.name.as_deref(), Some(name), "{email}");
    }
}

async fn a_csv_row_longer_than_the_cap_is_refused_with_its_line_number(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = app.dir.path().join("huge.csv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        write!(
            f,
            "email,name,timezone,offerings\nfirst@example.org,,,morning-meditation\n\n"
        )
        .unwrap();
        // Line 4: one field of 8 MiB, no line break.
        write!(f, "huge@example.org,").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            f.write_all(&chunk).unwrap();
        }
        writeln!(f, ",,morning-meditation").unwrap();
        writeln!(f, "after@example.org,,,morning-meditation").unwrap();
    }
    for strict in [true, false] {
        let mut args = vec!["subscribers", "import", path.to_str().unwrap()];
        if strict {
            args.push("--strict");
        }
        let out = app.cli(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(
            err.len() < 2_000,
            "the error echoes the row: {} bytes",
            err.len()
        );
    }
    // Without --strict the rows before it were imported; the row after it was not read.
    let list = stdout(&app.cli(&["subscribers", "list"]));
    assert!(list.contains("first@example.org"), "{list}");
    assert!(!list.contains("after@example.org"), "{list}");

    // A quoted field that goes on over many lines is cut as well, with the line it starts on.
    std::fs::write(
        &path,
        format!(
            "email,name,timezone,offerings\nq@example.org,\"{}\",,morning-meditation\n",
            "a\n".repeat(2 << 20)
        ),
    )
    .unwrap();
    let out = app.cli(&["subscribers", "import", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn log_lines_written_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sangha.db", dir.path().display());
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, "email,name,timezone,offerings\n").unwrap();
    let out = sangha(
        dir.path(),
        &url,
        &["subscribers", "import", csv.to_str().unwrap()],
        &[("RUST_LOG", "info"), ("SANGHA__TOKENS__KEY", "")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // No token key was configured: `generated a new token key` is logged at info.
    let log = stderr(&out);
    assert!(log.contains("generated a new token key"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in {log:?}");
}

async fn a_long_time_zone_is_not_echoed_back_by_the_signup_form_or_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let zone = "x".repeat(10_000);
    let long_run = "x".repeat(100);
    let r = app
        .post_form(
            "/subscribe",
            &format!("email=tz@example.org&offerings=morning-meditation&timezone={zone}"),
        )
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let body = r.text().await.unwrap();
    assert!(body.contains("time zone"), "{body}");
    assert!(!body.contains(&long_run), "{} bytes echoed", body.len());

    let r = app
        .post_json(
            "/subscribe",
            &serde_json::json!({
                "email": "tz@example.org",
                "offerings": ["morning-meditation"],
                "timezone": zone,
            }),
        )
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let body = r.text().await.unwrap();
    assert!(body.contains("time zone"), "{body}");
    assert!(!body.contains(&long_run), "{} bytes echoed", body.len());

    // The command line, and an import row, say it briefly too.
    let content = app.write_content(
        "note.md",
        "---\nsubject: A note\noffering: morning-meditation\n---\nHello\n",
    );
    let out = app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content",
        content.to_str().unwrap(),
        "--at",
        "2030-01-01 06:30",
        "--timezone",
        &zone,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("time zone"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&long_run), "{}", stderr(&out).len());

    let path = app.dir.path().join("tz.csv");
    std::fs::write(
        &path,
        format!("email,name,timezone,offerings\ntz@example.org,,{zone},morning-meditation\n"),
    )
    .unwrap();
    let out = app.cli(&["subscribers", "import", path.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("line 2: timezone"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&long_run), "{}", stderr(&out).len());
}

#[cfg(unix)]
#[test]
fn a_wide_open_data_folder_gets_owner_only_files_and_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let url = format!("sqlite://{}/sangha.db", data.display());
    let csv = dir.path().join("p.csv");
    std::fs::write(
        &csv,
        "email,name,timezone,offerings\na@example.org,,,morning-meditation\n",
    )
    .unwrap();
    let out = sangha(
        &data,
        &url,
        &["subscribers", "import", csv.to_str().unwrap()],
        &[("SANGHA__TOKENS__KEY", "")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains(&data.display().to_string()),
        "no warning about the data folder: {err}"
    );
    let mut seen = Vec::new();
    for name in ["sangha.db", "sangha.db-wal", "sangha.db-shm", "token.key"] {
        let path = data.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
        seen.push(name);
    }
    assert!(
        seen.contains(&"sangha.db") && seen.contains(&"token.key"),
        "{seen:?}"
    );
}
