//! A relay whose certificate comes from a private CA, or is self-signed: refused as unknown
//! without `smtp.ca_file`, delivered to with it (by STARTTLS and by implicit TLS, with AUTH),
//! and pinned by `smtp.certificate_sha256`: the right fingerprint is accepted (even for a
//! self-signed CA certificate used as the server's own), a wrong one refused.

use std::path::PathBuf;

use sangha::config::{CertificateSha256, Secret, TlsMode, TransportKind};

use crate::backend_tests;
use crate::support::smtp::{TestSmtpServer, TestTls};
use crate::support::test_ca::{ServerCertificate, TestCa};
use crate::support::{Backend, DEADLINE, Options, TestApp, stderr, test_send};

backend_tests!(
    starttls_to_a_private_ca_relay_is_refused_without_ca_file,
    starttls_with_auth_delivers_to_a_private_ca_relay_given_its_ca_file,
    implicit_tls_to_a_private_ca_relay_is_refused_without_ca_file,
    implicit_tls_with_auth_delivers_to_a_private_ca_relay_given_its_ca_file,
    a_self_signed_relay_is_delivered_to_when_its_fingerprint_is_pinned,
    a_relay_whose_certificate_does_not_match_the_pin_is_refused,
);

const USER: &str = "sangha";
const PASSWORD: &str = "s3cret-pass";

/// How Sangha is told to check the relay's certificate.
#[derive(Default)]
struct Trust {
    ca_file: Option<PathBuf>,
    pin: Option<CertificateSha256>,
}

async fn relay(tls: TestTls) -> TestSmtpServer {
    TestSmtpServer::builder()
        .credentials(USER, PASSWORD)
        .tls(tls)
        .start()
        .await
}

async fn app(backend: Backend, server: &TestSmtpServer, mode: TlsMode, trust: Trust) -> TestApp {
    let port = server.port();
    TestApp::spawn_with(backend, Options::default(), move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = mode;
        c.smtp.username = USER.into();
        c.smtp.password = Secret::new(PASSWORD);
        c.smtp.ca_file = trust.ca_file;
        c.smtp.certificate_sha256 = trust.pin;
    })
    .await
}

/// Signs someone up and waits for the confirmation to reach the relay.
async fn delivered(app: &TestApp, server: &TestSmtpServer) {
    app.signup("ananda@example.org", &["morning-meditation"])
        .await;
    let received = server.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].rcpt_to, vec!["ananda@example.org".to_owned()]);
}

/// Signs someone up and waits for the delivery's first failure; returns its error.
async fn refused(app: &TestApp, server: &TestSmtpServer) -> String {
    app.signup("ananda@example.org", &["morning-meditation"])
        .await;
    let error = crate::support::eventually_async(DEADLINE, || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT last_error FROM deliveries")
            .fetch_one(app.store().pool())
            .await
            .unwrap()
    })
    .await
    .expect("the delivery fails");
    assert!(server.messages().is_empty());
    error
}

fn private_ca_relay() -> (TestCa, ServerCertificate) {
    let ca = TestCa::new("Friend's private CA");
    let cert = ca.server_certificate(&["127.0.0.1"]);
    (ca, cert)
}

async fn starttls_to_a_private_ca_relay_is_refused_without_ca_file(backend: Backend) {
    let (_ca, cert) = private_ca_relay();
    let server = relay(TestTls::Starttls(cert.server_config())).await;
    let app = app(backend, &server, TlsMode::Starttls, Trust::default()).await;
    let error = refused(&app, &server).await;
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("smtp.ca_file"), "the fix is named: {error}");
}

async fn starttls_with_auth_delivers_to_a_private_ca_relay_given_its_ca_file(backend: Backend) {
    let (ca, cert) = private_ca_relay();
    let dir = tempfile::tempdir().unwrap();
    let server = relay(TestTls::Starttls(cert.server_config())).await;
    let trust = Trust {
        ca_file: Some(ca.write_pem(dir.path())),
        ..Trust::default()
    };
    let app = app(backend, &server, TlsMode::Starttls, trust).await;
    delivered(&app, &server).await;
}

async fn implicit_tls_to_a_private_ca_relay_is_refused_without_ca_file(backend: Backend) {
    let (_ca, cert) = private_ca_relay();
    let server = relay(TestTls::Implicit(cert.server_config())).await;
    let app = app(backend, &server, TlsMode::Tls, Trust::default()).await;
    let error = refused(&app, &server).await;
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("smtp.ca_file"), "the fix is named: {error}");
}

async fn implicit_tls_with_auth_delivers_to_a_private_ca_relay_given_its_ca_file(backend: Backend) {
    let (ca, cert) = private_ca_relay();
    let dir = tempfile::tempdir().unwrap();
    let server = relay(TestTls::Implicit(cert.server_config())).await;
    let trust = Trust {
        ca_file: Some(ca.write_pem(dir.path())),
        ..Trust::default()
    };
    let app = app(backend, &server, TlsMode::Tls, trust).await;
    delivered(&app, &server).await;
}

async fn a_self_signed_relay_is_delivered_to_when_its_fingerprint_is_pinned(backend: Backend) {
    // As `openssl req -x509` makes it: a CA certificate used as the server's own, for a name
    // that is not the one Sangha connects to. Only the pin can make it usable.
    let cert = ServerCertificate::self_signed_ca(&["relay.friend.lan"]);
    let pin = CertificateSha256::parse(&cert.sha256()).unwrap();
    let server = relay(TestTls::Starttls(cert.server_config())).await;
    let trust = Trust {
        pin: Some(pin),
        ..Trust::default()
    };
    let app = app(backend, &server, TlsMode::Starttls, trust).await;
    delivered(&app, &server).await;
}

async fn a_relay_whose_certificate_does_not_match_the_pin_is_refused(backend: Backend) {
    let cert = ServerCertificate::self_signed_ca(&["relay.friend.lan"]);
    let other = ServerCertificate::self_signed_ca(&["relay.friend.lan"]);
    let pin = CertificateSha256::parse(&other.sha256()).unwrap();
    let server = relay(TestTls::Implicit(cert.server_config())).await;
    let trust = Trust {
        pin: Some(pin),
        ..Trust::default()
    };
    let app = app(backend, &server, TlsMode::Tls, trust).await;
    let error = refused(&app, &server).await;
    assert!(error.contains("smtp.certificate_sha256"), "{error}");
    assert!(
        error.contains(&cert.sha256()),
        "the certificate's own fingerprint is shown: {error}"
    );
}

/// `test-send` through a private-CA relay with the given environment; (success, stderr).
/// The CLI is waited for on this thread: the test needs a multi-threaded runtime, so that the
/// relay answers meanwhile.
async fn test_send_with(env: &[(&str, String)]) -> (bool, String, TestSmtpServer) {
    let (ca, cert) = private_ca_relay();
    let server = relay(TestTls::Starttls(cert.server_config())).await;
    let app = TestApp::spawn_without_worker(Backend::Sqlite).await;
    let pem = ca.write_pem(app.dir.path());
    let content = app.write_content("m.md", crate::sends::MORNING);
    let mut all = vec![
        ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
        ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__SMTP__PORT", server.port().to_string()),
        ("SANGHA__SMTP__TLS", "starttls".to_owned()),
        ("SANGHA__SMTP__USERNAME", USER.to_owned()),
        ("SANGHA__SMTP__PASSWORD", PASSWORD.to_owned()),
    ];
    for (k, v) in env {
        all.push((k, v.replace("{ca}", pem.to_str().unwrap())));
    }
    let out = test_send(&app.config, &content, &all);
    (out.status.success(), stderr(&out), server)
}

/// The report: `SSL_CERT_FILE` was ignored. With `smtp.trust = "system"` it is read
/// (rustls-native-certs); with the default `"builtin"` it is not, and a warning says so.
#[tokio::test(flavor = "multi_thread")]
async fn ssl_cert_file_is_trusted_with_trust_system_and_named_with_builtin() {
    let (ok, err, server) = test_send_with(&[
        ("SSL_CERT_FILE", "{ca}".to_owned()),
        ("SANGHA__SMTP__TRUST", "system".to_owned()),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(server.messages().len(), 1);

    let (ok, err, server) = test_send_with(&[("SSL_CERT_FILE", "{ca}".to_owned())]).await;
    assert!(!ok);
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        err.contains("smtp.trust = \"builtin\" does not read"),
        "the fix is named: {err}"
    );
    assert!(server.messages().is_empty());
}

/// No check at all only under a loud name, and with a warning every time.
#[tokio::test(flavor = "multi_thread")]
async fn danger_accept_invalid_certs_delivers_and_warns() {
    let (ok, err, server) = test_send_with(&[(
        "SANGHA__SMTP__DANGER_ACCEPT_INVALID_CERTS",
        "true".to_owned(),
    )])
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("is NOT checked"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert_eq!(server.messages().len(), 1);
}
