//! The Amazon SES webhook: the documented sample SES notifications (tests/fixtures/webhooks/),
//! put on deliveries made here, wrapped in SNS messages signed with a key and certificate made
//! here and served by a stand-in for Amazon SNS, act as a bounce or complaint by mail does,
//! once; a wrong signature or topic (401), a body that is not an SNS message (400) and one too
//! big (413) change nothing; and nothing is fetched from a URL that is not on an Amazon SNS host.

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use rsa::pkcs8::EncodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sangha::bounces::SnsUrl;
use sangha::config::SesWebhook;
use sangha::web::{FetchError, SnsFetch};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::bounces::{subscribed, suppressed};
use crate::support::{Backend, TestApp};
use crate::webhooks::{bounce_rows, fixture, person, post, relay_replied, too_big};

backend_tests!(
    ses_bounces_and_complaints_act_once_and_need_the_sns_signature,
    nothing_is_fetched_from_a_url_off_amazon_sns,
    a_subscription_to_the_configured_topic_is_confirmed_once,
);

const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:MyTopic";
const CERT_URL: &str = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";

/// A stand-in for Amazon SNS: serves the pages it was given, and remembers what was asked.
#[derive(Default)]
struct FakeSns {
    pages: Mutex<Vec<(String, Vec<u8>)>>,
    asked: Mutex<Vec<String>>,
}

impl FakeSns {
    /// One that serves `key`'s certificate at [`CERT_URL`] (and at `also`).
    fn serving(key: &TestKey, also: &[&str]) -> Arc<Self> {
        let sns = Self::default();
        for url in std::iter::once(&CERT_URL).chain(also) {
            sns.serve(url, key.certificate.as_bytes());
        }
        Arc::new(sns)
    }

    fn serve(&self, url: &str, body: &[u8]) {
        self.pages
            .lock()
            .unwrap()
            .push((url.to_owned(), body.to_vec()));
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl SnsFetch for FakeSns {
    fn get<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        self.asked.lock().unwrap().push(url.as_str().to_owned());
        let page = self
            .pages
            .lock()
            .unwrap()
            .iter()
            .find(|(u, _)| u == url.as_str())
            .map(|(_, body)| body.clone());
        Box::pin(async move { page.ok_or(FetchError::Status(404)) })
    }
}

/// An RSA key and a self-signed certificate of it, as SNS signs with.
struct TestKey {
    key: RsaPrivateKey,
    certificate: String,
}

/// RSA keys take a while to make: two, made once for all the tests.
fn keys() -> &'static [TestKey; 2] {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [new_key(), new_key()])
}

fn new_key() -> TestKey {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["sns.amazonaws.com".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap()
        .pem();
    TestKey { key, certificate }
}

/// The DER DigestInfo prefixes of PKCS#1 v1.5 signatures (RFC 8017, section 9.2).
const SHA1_PREFIX: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// `message` signed by `key` as SNS does with `SignatureVersion` `version` (1: SHA1withRSA,
/// 2: SHA256withRSA) over the fields AWS lists for its type, each as "Name\nvalue\n".
fn signed(mut message: Value, key: &TestKey, version: u8) -> Vec<u8> {
    let fields: &[&str] = if message["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let mut text = String::new();
    for name in fields {
        if let Some(value) = message.get(*name).and_then(Value::as_str) {
            text.push_str(&format!("{name}\n{value}\n"));
        }
    }
    let (hash, prefix) = match version {
        1 => (&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, SHA1_PREFIX),
        _ => (&ring::digest::SHA256, SHA256_PREFIX),
    };
    let digest = ring::digest::digest(hash, text.as_bytes());
    let padding = Pkcs1v15Sign {
        hash_len: Some(digest.as_ref().len()),
        prefix: prefix.into(),
    };
    let signature = key.key.sign(padding, digest.as_ref()).unwrap();
    message["SignatureVersion"] = json!(version.to_string());
    message["Signature"] = json!(BASE64.encode(signature));
    serde_json::to_vec(&message).unwrap()
}

/// The documented SNS notification carrying `event`, as SNS message `id` of our topic.
fn notification(event: &Value, id: &str) -> Value {
    let mut message = fixture("sns-notification.json");
    message["MessageId"] = json!(id);
    message["TopicArn"] = json!(TOPIC);
    message["Message"] = json!(event.to_string());
    message["SigningCertURL"] = json!(CERT_URL);
    message
}

fn sns_type(kind: &str) -> Vec<(&'static str, String)> {
    vec![("x-amz-sns-message-type", kind.to_owned())]
}

fn configured(c: &mut sangha::config::Config) {
    c.mail.return_path = Some("bounces@example.org".parse().unwrap());
    c.webhooks.ses = Some(SesWebhook {
        topic_arn: Some(TOPIC.to_owned()),
    });
}

/// jane@example.org confirmed; the documented bounce (with a DSN) of her confirmation email,
/// sent from its VERP address.
async fn jane_bounced(app: &TestApp) -> Value {
    let (jane, message_id) = person(app, "jane@example.org").await;
    let return_path = app.config.mail.return_path.as_ref().unwrap();
    let verp = app
        .state
        .links()
        .bounce_address(return_path, jane, &message_id);
    let mut bounce = fixture("ses-bounce-dsn.json");
    bounce["mail"]["source"] = json!(verp.to_string());
    bounce
}

async fn ses_bounces_and_complaints_act_once_and_need_the_sns_signature(backend: Backend) {
    let [key, other_key] = keys();
    let sns = FakeSns::serving(key, &[]);
    let app = TestApp::spawn_with_sns_fetch(backend, sns.clone(), configured).await;
    let jane_bounce = jane_bounced(&app).await;
    let (richard, _) = person(&app, "richard@example.org").await;
    let (_, mary_message) = person(&app, "mary@example.org").await;
    let headers = sns_type("Notification");

    // A permanent bounce (with its DSN) sent from our VERP address: matched by it.
    let bounce = notification(&jane_bounce, "b1f0c1a4-0001-5d6e-9f7a-ses-bounce-dsn");

    // Signed with another key, signed as version 1 but with SHA-256, changed after signing,
    // or not signed at all: refused, and nothing recorded.
    let mut changed: Value = serde_json::from_slice(&signed(bounce.clone(), key, 1)).unwrap();
    changed["Message"] = json!(
        changed["Message"]
            .as_str()
            .unwrap()
            .replace("5.1.1", "5.1.2")
    );
    let mut wrong_version: Value = serde_json::from_slice(&signed(bounce.clone(), key, 2)).unwrap();
    wrong_version["SignatureVersion"] = json!("1");
    let mut unsigned = bounce.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    let refused = [
        signed(bounce.clone(), other_key, 1),
        serde_json::to_vec(&changed).unwrap(),
        serde_json::to_vec(&wrong_version).unwrap(),
        serde_json::to_vec(&unsigned).unwrap(),
    ];
    for body in refused {
        let (status, answer) = post(&app, "/webhooks/ses", &headers, body).await;
        assert_eq!(status, 401, "{answer}");
    }
    assert!(bounce_rows(&app).await.is_empty());
    assert!(subscribed(&app, "jane@example.org").await);

    // Signed (version 1, SHA1withRSA): suppressed; the same SNS message again does nothing more.
    let body = signed(bounce, key, 1);
    let (status, answer) = post(&app, "/webhooks/ses", &headers, body.clone()).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 1 })));
    assert!(suppressed(&app, "jane@example.org").await);
    assert!(!subscribed(&app, "jane@example.org").await);
    let (status, answer) = post(&app, "/webhooks/ses", &headers, body).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 0 })));

    // A bounce without a DSN, from an address that is not ours: matched by SES's message id,
    // which SES's SMTP interface answered with (`250 Ok ID`). Version 2, no Subject.
    let mut bounce = fixture("ses-bounce-no-dsn.json");
    bounce["bounce"]["bouncedRecipients"] = json!([{ "emailAddress": "richard@example.org" }]);
    let ses_id = bounce["mail"]["messageId"].as_str().unwrap().to_owned();
    relay_replied(&app, richard, &format!("250 Ok {ses_id}")).await;
    let mut bounce = notification(&bounce, "b1f0c1a4-0002-5d6e-9f7a-ses-bounce-no-dsn");
    bounce.as_object_mut().unwrap().remove("Subject");
    let (status, answer) = post(&app, "/webhooks/ses", &headers, signed(bounce, key, 2)).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 1 })));
    assert!(suppressed(&app, "richard@example.org").await);

    // A complaint quoting our Message-ID (version 2): unsubscribed from everything.
    let mut complaint = fixture("ses-complaint.json");
    complaint["complaint"]["complainedRecipients"] =
        json!([{ "emailAddress": "mary@example.org" }]);
    complaint["mail"]["commonHeaders"]["messageId"] = json!(mary_message);
    let complaint = notification(&complaint, "b1f0c1a4-0003-5d6e-9f7a-ses-complaint");
    let (status, answer) = post(&app, "/webhooks/ses", &headers, signed(complaint, key, 2)).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 1 })));
    assert!(!subscribed(&app, "mary@example.org").await);
    assert!(suppressed(&app, "mary@example.org").await);

    // A delivery: nothing to record.
    let delivery = notification(&fixture("ses-delivery.json"), "b1f0c1a4-0004-5d6e-9f7a");
    let (status, answer) = post(&app, "/webhooks/ses", &headers, signed(delivery, key, 1)).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 0 })));

    assert_eq!(
        bounce_rows(&app).await,
        vec![
            (
                "ses".into(),
                "hard".into(),
                Some("jane@example.org".into()),
                Some("verp".into()),
                "suppressed".into()
            ),
            (
                "ses".into(),
                "hard".into(),
                Some("richard@example.org".into()),
                Some("provider_id".into()),
                "suppressed".into()
            ),
            (
                "ses".into(),
                "complaint".into(),
                Some("mary@example.org".into()),
                Some("message_id".into()),
                "unsubscribed".into()
            ),
        ]
    );
    // The certificate was fetched once, and nothing else.
    assert_eq!(sns.asked(), vec![CERT_URL.to_owned()]);

    // Not an SNS message, a signed one whose SES event is not JSON, a header that says another
    // type: 400; too big: 413.
    let (status, answer) = post(&app, "/webhooks/ses", &headers, b"{\"Type\":".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    let mut not_json = notification(&json!({}), "b1f0c1a4-0005-5d6e-9f7a");
    not_json["Message"] = json!("this is not an SES event");
    let (status, answer) = post(&app, "/webhooks/ses", &headers, signed(not_json, key, 2)).await;
    assert_eq!(status, 400, "{answer}");
    let delivery = notification(&fixture("ses-delivery.json"), "b1f0c1a4-0006-5d6e-9f7a");
    let other_type = sns_type("SubscriptionConfirmation");
    let (status, _) = post(&app, "/webhooks/ses", &other_type, signed(delivery, key, 2)).await;
    assert_eq!(status, 400);
    let (status, _) = post(&app, "/webhooks/ses", &headers, too_big()).await;
    assert_eq!(status, 413);
    assert_eq!(bounce_rows(&app).await.len(), 3);
}

async fn nothing_is_fetched_from_a_url_off_amazon_sns(backend: Backend) {
    let [key, _] = keys();
    let elsewhere = [
        "https://example.org/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "http://sns.us-west-2.amazonaws.com/SimpleNotificationService.pem",
        "https://sns.us-west-2.amazonaws.com.example.org/SimpleNotificationService.pem",
        "https://sns.us-west-2.amazonaws.com:8443/SimpleNotificationService.pem",
    ];
    // The stand-in would serve the certificate there too: only the host check stops it.
    let sns = FakeSns::serving(key, &elsewhere);
    let app = TestApp::spawn_with_sns_fetch(backend, sns.clone(), configured).await;
    let event = jane_bounced(&app).await;
    for url in elsewhere {
        let mut message = notification(&event, "b1f0c1a4-0010-5d6e-9f7a");
        message["SigningCertURL"] = json!(url);
        let body = signed(message, key, 1);
        let (status, answer) = post(&app, "/webhooks/ses", &sns_type("Notification"), body).await;
        assert_eq!(status, 401, "{url}: {answer}");
    }
    // A subscription to be confirmed elsewhere: refused too.
    let mut confirmation = fixture("sns-subscription-confirmation.json");
    confirmation["SigningCertURL"] = json!(CERT_URL);
    confirmation["TopicArn"] = json!(TOPIC);
    confirmation["SubscribeURL"] = json!("https://example.org/?Action=ConfirmSubscription");
    let body = signed(confirmation, key, 1);
    let (status, _) = post(
        &app,
        "/webhooks/ses",
        &sns_type("SubscriptionConfirmation"),
        body,
    )
    .await;
    assert_eq!(status, 401);

    assert_eq!(sns.asked(), Vec::<String>::new(), "nothing was fetched");
    assert!(bounce_rows(&app).await.is_empty());
    assert!(subscribed(&app, "jane@example.org").await);
}

async fn a_subscription_to_the_configured_topic_is_confirmed_once(backend: Backend) {
    let [key, _] = keys();
    let sns = FakeSns::serving(key, &[]);
    let mut confirmation = fixture("sns-subscription-confirmation.json");
    confirmation["TopicArn"] = json!(TOPIC);
    let subscribe_url = confirmation["SubscribeURL"].as_str().unwrap().to_owned();
    sns.serve(&subscribe_url, b"<ConfirmSubscriptionResponse/>");
    let app = TestApp::spawn_with_sns_fetch(backend, sns.clone(), configured).await;
    let headers = sns_type("SubscriptionConfirmation");

    // Another topic (even signed by SNS): refused before anything is fetched.
    let mut other = confirmation.clone();
    other["TopicArn"] = json!("arn:aws:sns:us-west-2:999999999999:SomeoneElsesTopic");
    let (status, _) = post(&app, "/webhooks/ses", &headers, signed(other, key, 1)).await;
    assert_eq!(status, 401);
    assert_eq!(sns.asked(), Vec::<String>::new());

    // A wrong signature: the certificate is fetched, the subscription not confirmed.
    let [_, other_key] = keys();
    let body = signed(confirmation.clone(), other_key, 1);
    let (status, _) = post(&app, "/webhooks/ses", &headers, body).await;
    assert_eq!(status, 401);
    assert_eq!(sns.asked(), vec![CERT_URL.to_owned()]);

    // Ours, signed: the SubscribeURL is visited, once.
    let (status, answer) = post(
        &app,
        "/webhooks/ses",
        &headers,
        signed(confirmation, key, 1),
    )
    .await;
    assert_eq!((status, &answer), (200, &json!({ "subscribed": TOPIC })));
    assert_eq!(sns.asked(), vec![CERT_URL.to_owned(), subscribe_url]);

    // Without a `[webhooks.ses]` section the route is not there.
    let unconfigured =
        TestApp::spawn_with_sns_fetch(Backend::Sqlite, Arc::new(FakeSns::default()), |_| {}).await;
    let (status, _) = post(&unconfigured, "/webhooks/ses", &headers, b"{}".to_vec()).await;
    assert_eq!(status, 404);
}
