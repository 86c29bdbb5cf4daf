//! `sangha doctor`: each check says OK, WARN or FAIL in plain words with the fix, the exit
//! status is non-zero when one fails, and nothing is changed or sent.

use sangha::config::Config;

use crate::backend_tests;
use crate::support::dns::TestDns;
use crate::support::smtp::{TestSmtpServer, TestTls};
use crate::support::test_ca::TestCa;
use crate::support::{Backend, relay_env, run_cli, run_cli_with, stderr, stdout, test_config};

backend_tests!(
    a_healthy_installation_passes_and_no_mail_is_sent,
    a_relay_that_refuses_the_login_or_is_down_fails_with_the_fix,
    a_database_not_yet_migrated_fails_and_doctor_creates_nothing,
);

const USER: &str = "sangha";
const PASSWORD: &str = "s3cret-pass";

/// The environment that sends through the relay on `port` (STARTTLS when `ca` is given).
fn smtp_env(
    port: u16,
    password: &str,
    ca: Option<&str>,
    dns: &TestDns,
) -> Vec<(&'static str, String)> {
    let mut env = relay_env(port);
    env.extend([
        dns_env(dns),
        ("SANGHA__SMTP__USERNAME", USER.to_owned()),
        ("SANGHA__SMTP__PASSWORD", password.to_owned()),
    ]);
    if let Some(ca_file) = ca {
        // STARTTLS instead of the plain connection of `relay_env`.
        env.retain(|(key, _)| *key != "SANGHA__SMTP__TLS");
        env.push(("SANGHA__SMTP__TLS", "starttls".to_owned()));
        env.push(("SANGHA__SMTP__CA_FILE", ca_file.to_owned()));
    }
    env
}

/// A name server with right SPF and DMARC records for the committed config's example.com.
async fn published() -> TestDns {
    let dns = TestDns::start().await;
    dns.add_txt("example.com", &["v=spf1 ip4:127.0.0.1 -all"]);
    dns.add_txt("_dmarc.example.com", &["v=DMARC1; p=reject"]);
    dns
}

/// The environment that points doctor at `dns` (never at the machine's resolver).
fn dns_env(dns: &TestDns) -> (&'static str, String) {
    ("SANGHA__DNS__NAMESERVERS", format!("[\"{}\"]", dns.addr()))
}

/// The config of a migrated database.
async fn migrated(backend: &Backend, dir: &std::path::Path) -> Config {
    let config = test_config(backend, dir).await;
    let out = run_cli(&config, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    config
}

/// The line of `area` with its verdict, e.g. `OK   smtp …`.
fn line<'a>(text: &'a str, verdict: &str, area: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(verdict) && l[4..].trim_start().starts_with(&format!("{area} ")))
}

async fn a_healthy_installation_passes_and_no_mail_is_sent(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = migrated(&backend, dir.path()).await;
    let dns = published().await;
    let ca = TestCa::new("Doctor's CA");
    let cert = ca.server_certificate(&["127.0.0.1"]);
    let server = TestSmtpServer::builder()
        .credentials(USER, PASSWORD)
        .tls(TestTls::Starttls(cert.server_config()))
        .start()
        .await;
    let ca_file = ca.write_pem(dir.path()).display().to_string();
    let mut env = smtp_env(server.port(), PASSWORD, Some(&ca_file), &dns);
    env.push((
        "SANGHA__SERVER__BASE_URL",
        "https://shakti.example".to_owned(),
    ));
    let out = run_cli_with(&config, &["doctor"], &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let smtp = line(&text, "OK", "smtp").unwrap_or_else(|| panic!("{text}"));
    for said in [
        "STARTTLS",
        "certificate accepted",
        "AUTH accepted",
        "no mail sent",
    ] {
        assert!(smtp.contains(said), "{said}: {smtp}");
    }
    assert!(line(&text, "OK", "database").is_some(), "{text}");
    assert!(line(&text, "OK", "base_url").is_some(), "{text}");
    assert!(line(&text, "OK", "spf").is_some(), "{text}");
    assert!(line(&text, "OK", "dmarc").is_some(), "{text}");
    assert!(text.contains("0 failed"), "{text}");
    assert_eq!(server.logins(), (1, 0), "one login, accepted");
    assert!(server.messages().is_empty(), "doctor sends no mail");
    assert!(!text.contains(PASSWORD) && !stderr(&out).contains(PASSWORD));
    if matches!(backend, Backend::Sqlite) {
        assert!(text.contains("WAL mode"), "{text}");
    }

    // An http:// site is a warning, not a failure.
    let env = smtp_env(server.port(), PASSWORD, Some(&ca_file), &dns);
    let out = run_cli_with(&config, &["doctor"], &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let warn = line(&text, "WARN", "base_url").unwrap_or_else(|| panic!("{text}"));
    assert!(warn.contains("server.base_url"), "{warn}");
    let warn = line(&text, "WARN", "bounces").unwrap_or_else(|| panic!("{text}"));
    assert!(warn.contains("mail.return_path is empty"), "{warn}");
    let mut env = smtp_env(server.port(), PASSWORD, Some(&ca_file), &dns);
    env.push((
        "SANGHA__MAIL__RETURN_PATH",
        "bounces@shakti.example".to_owned(),
    ));
    let text = stdout(&run_cli_with(&config, &["doctor"], &env));
    let ok = line(&text, "OK", "bounces").unwrap_or_else(|| panic!("{text}"));
    assert!(ok.contains("bounces@shakti.example"), "{ok}");
}

async fn a_relay_that_refuses_the_login_or_is_down_fails_with_the_fix(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = migrated(&backend, dir.path()).await;
    let dns = published().await;
    let server = TestSmtpServer::builder()
        .credentials(USER, PASSWORD)
        .start()
        .await;
    let out = run_cli_with(
        &config,
        &["doctor"],
        &smtp_env(server.port(), "wrong-pass", None, &dns),
    );
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fail = line(&text, "FAIL", "smtp").unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("smtp.password"), "the fix is named: {fail}");
    assert!(!text.contains("wrong-pass") && !stderr(&out).contains("wrong-pass"));
    assert!(text.contains("1 failed"), "{text}");
    assert!(server.messages().is_empty());

    // A relay that is not there: a port that was free a moment ago.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = run_cli_with(
        &config,
        &["doctor"],
        &smtp_env(closed_port, PASSWORD, None, &dns),
    );
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fail = line(&text, "FAIL", "smtp").unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("smtp.host and smtp.port"), "{fail}");
}

async fn a_database_not_yet_migrated_fails_and_doctor_creates_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&backend, dir.path()).await;
    let dns = published().await;
    let out = run_cli_with(&config, &["doctor"], &[dns_env(&dns)]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fail = line(&text, "FAIL", "database").unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("sangha migrate"), "{fail}");
    match backend {
        Backend::Sqlite => {
            assert!(fail.contains("does not exist yet"), "{fail}");
            let file = sangha::store::sqlite_file(&config.database.url).unwrap();
            assert!(!file.exists(), "doctor created {}", file.display());
        }
        Backend::Postgres(_) => assert!(fail.contains("not applied"), "{fail}"),
    }
    let warn = line(&text, "WARN", "mail").unwrap_or_else(|| panic!("{text}"));
    assert!(warn.contains("mail.transport"), "{warn}");
    assert!(
        !config.outbox_dir().exists(),
        "doctor created the outbox folder"
    );

    // A configuration that does not load is a finding too, naming the key.
    let out = run_cli_with(
        &config,
        &["doctor"],
        &[
            ("SANGHA__SERVER__BASE_URL", "localhost".to_owned()),
            dns_env(&dns),
        ],
    );
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fail = line(&text, "FAIL", "config").unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("server.base_url"), "{fail}");
}

/// Runs doctor asking `dns` for records, with mail from `from`; returns its output and
/// whether it passed.
fn doctor_with_dns(config: &Config, dns: &TestDns, from: &str) -> (String, bool) {
    let env = [
        ("SANGHA__DNS__NAMESERVERS", format!("[\"{}\"]", dns.addr())),
        ("SANGHA__MAIL__FROM", from.to_owned()),
    ];
    let out = run_cli_with(config, &["doctor"], &env);
    (stdout(&out), out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_and_dmarc_are_read_from_dns_and_judged_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let config = migrated(&Backend::Sqlite, dir.path()).await;
    let dns = TestDns::start().await;
    let from = "Shakti Temple <hello@shakti.example>";

    // Nothing published: both fail, with the record to publish.
    let (text, ok) = doctor_with_dns(&config, &dns, from);
    assert!(!ok, "{text}");
    let spf = line(&text, "FAIL", "spf").unwrap_or_else(|| panic!("{text}"));
    assert!(spf.contains("no SPF record at shakti.example"), "{spf}");
    let dmarc = line(&text, "FAIL", "dmarc").unwrap_or_else(|| panic!("{text}"));
    assert!(dmarc.contains("_dmarc.shakti.example"), "{dmarc}");
    assert!(
        dmarc.contains("v=DMARC1; p=none"),
        "the record to start with: {dmarc}"
    );

    // Right records (a long SPF value in two strings is one record).
    dns.add_txt(
        "shakti.example",
        &[
            "v=spf1 ip4:192.0.2.0/24 ",
            "include:_spf.relay.example -all",
        ],
    );
    dns.add_txt("shakti.example", &["google-site-verification=abc"]);
    dns.add_txt(
        "_dmarc.shakti.example",
        &["v=DMARC1; p=quarantine; rua=mailto:d@shakti.example"],
    );
    let (text, _) = doctor_with_dns(&config, &dns, from);
    let spf = line(&text, "OK", "spf").unwrap_or_else(|| panic!("{text}"));
    assert!(spf.contains("include:_spf.relay.example -all"), "{spf}");
    let dmarc = line(&text, "OK", "dmarc").unwrap_or_else(|| panic!("{text}"));
    assert!(dmarc.contains("p=quarantine"), "{dmarc}");
    assert!(!text.contains("FAIL"), "{text}");

    // A subdomain without its own DMARC record is covered by its parent's.
    let (text, _) = doctor_with_dns(&config, &dns, "Shakti <news@news.shakti.example>");
    let dmarc = line(&text, "OK", "dmarc").unwrap_or_else(|| panic!("{text}"));
    assert!(dmarc.contains("(from shakti.example)"), "{dmarc}");

    // Wrong records.
    dns.remove("shakti.example");
    dns.add_txt("shakti.example", &["v=spf1 a mx +all"]);
    dns.remove("_dmarc.shakti.example");
    dns.add_txt(
        "_dmarc.shakti.example",
        &["v=DMARC1; rua=mailto:d@shakti.example"],
    );
    let (text, ok) = doctor_with_dns(&config, &dns, from);
    assert!(!ok, "{text}");
    let spf = line(&text, "FAIL", "spf").unwrap_or_else(|| panic!("{text}"));
    assert!(spf.contains("lets anyone send"), "{spf}");
    let dmarc = line(&text, "FAIL", "dmarc").unwrap_or_else(|| panic!("{text}"));
    assert!(dmarc.contains("no valid policy"), "{dmarc}");

    dns.add_txt("shakti.example", &["v=spf1 -all"]);
    dns.remove("_dmarc.shakti.example");
    dns.add_txt("_dmarc.shakti.example", &["v=DMARC1; p=none"]);
    let (text, _) = doctor_with_dns(&config, &dns, from);
    let spf = line(&text, "FAIL", "spf").unwrap_or_else(|| panic!("{text}"));
    assert!(spf.contains("2 SPF records"), "{spf}");
    let dmarc = line(&text, "OK", "dmarc").unwrap_or_else(|| panic!("{text}"));
    assert!(
        dmarc.contains("p=quarantine"),
        "the advice names the next step: {dmarc}"
    );

    // A name server that does not answer is a failure that says so, not "no record".
    drop(dns);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let env = [(
        "SANGHA__DNS__NAMESERVERS",
        format!("[\"{}\"]", silent.local_addr().unwrap()),
    )];
    let out = run_cli_with(&config, &["doctor"], &env);
    let text = stdout(&out);
    let spf = line(&text, "FAIL", "spf").unwrap_or_else(|| panic!("{text}"));
    assert!(spf.contains("cannot look up"), "{spf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dkim_key_is_checked_against_the_record_published_for_its_selector() {
    use sangha::mail::{DkimAlgorithm, generate_key, record_of_pem};
    let dir = tempfile::tempdir().unwrap();
    let config = migrated(&Backend::Sqlite, dir.path()).await;
    let dns = published().await;
    let pem = generate_key(DkimAlgorithm::Ed25519).unwrap();
    let file = dir.path().join("ed1.pem");
    std::fs::write(&file, &pem).unwrap();
    let record = record_of_pem("ed1", "example.com", pem.as_bytes()).unwrap();
    let with_key = [
        dns_env(&dns),
        (
            "SANGHA__DKIM__KEYS",
            format!("[{{selector=\"ed1\",file=\"{}\"}}]", file.display()),
        ),
    ];

    // Not published yet.
    let out = run_cli_with(&config, &["doctor"], &with_key);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fail = line(&text, "FAIL", "dkim").unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("ed1._domainkey.example.com"), "{fail}");
    assert!(
        fail.contains("sangha dkim show"),
        "the fix is named: {fail}"
    );

    // Another key published under the selector (an old one, or a typo).
    let other = record_of_pem(
        "ed1",
        "example.com",
        generate_key(DkimAlgorithm::Ed25519).unwrap().as_bytes(),
    )
    .unwrap();
    dns.add_txt(&other.name, &[&other.value]);
    let out = run_cli_with(&config, &["doctor"], &with_key);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    let fail = line(&text, "FAIL", "dkim").unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("another key"), "{fail}");

    // The right one, split into strings as a zone file would.
    dns.remove(&record.name);
    let (head, tail) = record.value.split_at(20);
    dns.add_txt(&record.name, &[head, tail]);
    let out = run_cli_with(&config, &["doctor"], &with_key);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(line(&text, "OK", "dkim").is_some(), "{text}");
    assert!(
        !text.contains(pem.trim()),
        "the private key is never printed"
    );

    // No key at all is a warning: mail goes out unsigned.
    let out = run_cli_with(&config, &["doctor"], &[dns_env(&dns)]);
    let text = stdout(&out);
    let warn = line(&text, "WARN", "dkim").unwrap_or_else(|| panic!("{text}"));
    assert!(warn.contains("sangha dkim keygen"), "{warn}");
}
