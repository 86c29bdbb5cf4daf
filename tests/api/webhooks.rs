//! The email providers' webhooks: the documented sample events (tests/fixtures/webhooks/), put
//! on deliveries made here and signed or authenticated with keys made here, act as a bounce or
//! complaint by mail does, once; a request not shown to come from the provider (401), a body
//! that is not an event (400), one too big (413) and, for Mailgun, a stale or replayed signature
//! (401) change nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use sangha::config::Secret;
use sangha::config::{MailgunWebhook, PostmarkWebhook, SendgridWebhook};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::backend_tests;
use crate::bounces::{subscribed, suppressed};
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    webhooks_answer_404_until_their_provider_is_configured,
    postmark_bounces_and_complaints_act_once_and_need_the_basic_auth,
    mailgun_events_act_once_and_need_a_fresh_unused_signature,
    sendgrid_batches_act_once_and_need_the_ecdsa_signature,
    webhooks_beyond_the_few_at_once_are_told_to_retry_and_change_nothing,
);

pub(crate) const POSTMARK_PASSWORD: &str = "postmark-password-from-the-environment";
const MAILGUN_KEY: &str = "key-mailgun-webhook-signing-key";

pub(crate) fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("a fixture")).expect("fixture JSON")
}

/// A person confirmed to the morning newsletter; their confirmation email is the delivery the
/// events answer. Returns its id and Message-ID.
pub(crate) async fn person(app: &TestApp, email: &str) -> (i64, String) {
    app.confirmed_subscriber(email, &["morning-meditation"])
        .await;
    sqlx::query_as(
        "SELECT d.id, d.message_id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE s.email = $1 AND d.kind = 'confirmation'",
    )
    .bind(email)
    .fetch_one(app.store().pool())
    .await
    .unwrap()
}

/// Stores the relay's reply to a delivery, as the worker does after sending it.
pub(crate) async fn relay_replied(app: &TestApp, delivery: i64, reply: &str) {
    sqlx::query("UPDATE deliveries SET smtp_reply = $1 WHERE id = $2")
        .bind(reply)
        .bind(delivery)
        .execute(app.store().pool())
        .await
        .unwrap();
}

/// The bounce rows: source, kind, recipient, how they were matched, what they did.
pub(crate) async fn bounce_rows(
    app: &TestApp,
) -> Vec<(String, String, Option<String>, Option<String>, String)> {
    sqlx::query_as("SELECT source, kind, recipient, matched_by, action FROM bounces ORDER BY id")
        .fetch_all(app.store().pool())
        .await
        .unwrap()
}

pub(crate) async fn post(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.body(body).send().await.expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A JSON body over the webhooks' 256 KiB limit.
pub(crate) fn too_big() -> Vec<u8> {
    format!("{{\"padding\": \"{}\"}}", "x".repeat(300 * 1024)).into_bytes()
}

async fn webhooks_answer_404_until_their_provider_is_configured(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |_| {}).await;
    for provider in ["postmark", "mailgun", "sendgrid"] {
        let body = serde_json::to_vec(&fixture("postmark-bounce.json")).unwrap();
        let (status, _) = post(&app, &format!("/webhooks/{provider}"), &[], body).await;
        assert_eq!(status, 404, "{provider}");
    }
    assert!(bounce_rows(&app).await.is_empty());
}

pub(crate) fn postmark_auth(password: &str) -> Vec<(&'static str, String)> {
    vec![(
        "authorization",
        format!("Basic {}", BASE64.encode(format!("postmark:{password}"))),
    )]
}

async fn postmark_bounces_and_complaints_act_once_and_need_the_basic_auth(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.webhooks.postmark = Some(PostmarkWebhook {
            username: "postmark".into(),
            password: Secret::new(POSTMARK_PASSWORD),
        });
    })
    .await;
    let (hard, _) = person(&app, "hard@example.org").await;
    let (complains, _) = person(&app, "complains@example.org").await;
    // Postmark's SMTP relay names its MessageID in its reply to each email.
    relay_replied(
        &app,
        hard,
        "250 2.0.0 Ok: queued as 883953f4-6105-42a2-a16a-77a8eac79483",
    )
    .await;
    relay_replied(
        &app,
        complains,
        "250 2.0.0 Ok: queued as 0c4e1f52-9d59-4a53-9f34-1a5b9b9c2c11",
    )
    .await;
    let good = postmark_auth(POSTMARK_PASSWORD);

    let mut bounce = fixture("postmark-bounce.json");
    bounce["Email"] = json!("hard@example.org");
    let bounce = serde_json::to_vec(&bounce).unwrap();

    // Without the right credentials nothing is read or done.
    for headers in [
        postmark_auth("guess"),
        Vec::new(),
        vec![("authorization", "Bearer x".into())],
    ] {
        let (status, _) = post(&app, "/webhooks/postmark", &headers, bounce.clone()).await;
        assert_eq!(status, 401, "{headers:?}");
    }
    assert!(bounce_rows(&app).await.is_empty());
    assert!(subscribed(&app, "hard@example.org").await);

    // The hard bounce, matched by Postmark's MessageID in the relay's reply: suppressed.
    let (status, answer) = post(&app, "/webhooks/postmark", &good, bounce.clone()).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 1 })));
    assert!(suppressed(&app, "hard@example.org").await);
    assert!(!subscribed(&app, "hard@example.org").await);
    // Postmark sending it again: 200, nothing more.
    let (status, answer) = post(&app, "/webhooks/postmark", &good, bounce).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 0 })));

    // The spam complaint: the person leaves everything and is suppressed.
    let mut complaint = fixture("postmark-spam-complaint.json");
    complaint["Email"] = json!("complains@example.org");
    complaint["MessageID"] = json!("0c4e1f52-9d59-4a53-9f34-1a5b9b9c2c11");
    let complaint = serde_json::to_vec(&complaint).unwrap();
    let (status, _) = post(&app, "/webhooks/postmark", &good, complaint).await;
    assert_eq!(status, 200);
    assert!(!subscribed(&app, "complains@example.org").await);
    assert!(suppressed(&app, "complains@example.org").await);

    let rows = bounce_rows(&app).await;
    assert_eq!(
        rows,
        vec![
            (
                "postmark".into(),
                "hard".into(),
                Some("hard@example.org".into()),
                Some("provider_id".into()),
                "suppressed".into()
            ),
            (
                "postmark".into(),
                "complaint".into(),
                Some("complains@example.org".into()),
                Some("provider_id".into()),
                "unsubscribed".into()
            ),
        ]
    );

    // Authenticated but not an event: 400 with the reason; too big: 413.
    let (status, answer) = post(
        &app,
        "/webhooks/postmark",
        &good,
        b"{\"RecordType\":".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("unreadable event"),
        "{answer}"
    );
    let (status, _) = post(
        &app,
        "/webhooks/postmark",
        &good,
        b"{\"RecordType\":\"Bounce\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "a bounce without its ID");
    let (status, _) = post(&app, "/webhooks/postmark", &good, too_big()).await;
    assert_eq!(status, 413);
    assert_eq!(bounce_rows(&app).await.len(), 2);
}

/// A Mailgun body: `event` under a signature of `timestamp` and `token` made with `key`.
fn mailgun_signed(mut body: Value, key: &str, timestamp: i64, token: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{token}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    body["signature"] = json!({
        "timestamp": timestamp.to_string(),
        "token": token,
        "signature": signature,
    });
    serde_json::to_vec(&body).unwrap()
}

async fn mailgun_events_act_once_and_need_a_fresh_unused_signature(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.webhooks.mailgun = Some(MailgunWebhook {
            signing_key: Secret::new(MAILGUN_KEY),
        });
    })
    .await;
    let (_, alice_message) = person(&app, "alice@example.org").await;
    let (_, bob_message) = person(&app, "bob@example.org").await;
    let (_, carol_message) = person(&app, "carol@example.org").await;
    let now = app.clock.now_ms() / 1000;
    // Mailgun keeps our Message-ID; its events quote it without the angle brackets.
    let event = |name: &str, email: &str, message_id: &str| {
        let mut body = fixture(name);
        body["event-data"]["recipient"] = json!(email);
        body["event-data"]["message"]["headers"]["message-id"] =
            json!(message_id.trim_matches(['<', '>']));
        body
    };
    let failed = event(
        "mailgun-failed-permanent.json",
        "alice@example.org",
        &alice_message,
    );

    // Not signed with our key, signed too long ago, or not signed at all: refused.
    let refused = [
        mailgun_signed(failed.clone(), "another-key", now, "token-a"),
        mailgun_signed(failed.clone(), MAILGUN_KEY, now - 6 * 60, "token-b"),
        serde_json::to_vec(&json!({ "event-data": failed["event-data"] })).unwrap(),
    ];
    for body in refused {
        let (status, _) = post(&app, "/webhooks/mailgun", &[], body).await;
        assert_eq!(status, 401);
    }
    assert!(bounce_rows(&app).await.is_empty());

    // A permanent failure, matched by Message-ID: suppressed.
    let signed = mailgun_signed(failed.clone(), MAILGUN_KEY, now, "token-1");
    let (status, answer) = post(&app, "/webhooks/mailgun", &[], signed.clone()).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 1 })));
    assert!(suppressed(&app, "alice@example.org").await);
    assert!(!subscribed(&app, "alice@example.org").await);
    // The same request again is a replay (its token was used): refused.
    let (status, _) = post(&app, "/webhooks/mailgun", &[], signed).await;
    assert_eq!(status, 401);
    // The same event, signed anew (Mailgun retrying): 200, nothing more.
    let again = mailgun_signed(failed, MAILGUN_KEY, now, "token-2");
    let (status, answer) = post(&app, "/webhooks/mailgun", &[], again).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 0 })));

    // A complaint: unsubscribed. A temporary failure (Mailgun retries): recorded, nothing done.
    let complained = event("mailgun-complained.json", "bob@example.org", &bob_message);
    let (status, _) = post(
        &app,
        "/webhooks/mailgun",
        &[],
        mailgun_signed(complained, MAILGUN_KEY, now, "token-3"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!subscribed(&app, "bob@example.org").await);
    let temporary = event(
        "mailgun-failed-temporary.json",
        "carol@example.org",
        &carol_message,
    );
    let (status, _) = post(
        &app,
        "/webhooks/mailgun",
        &[],
        mailgun_signed(temporary, MAILGUN_KEY, now, "token-4"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(subscribed(&app, "carol@example.org").await);
    assert!(!suppressed(&app, "carol@example.org").await);

    let rows = bounce_rows(&app).await;
    assert_eq!(
        rows,
        vec![
            (
                "mailgun".into(),
                "hard".into(),
                Some("alice@example.org".into()),
                Some("message_id".into()),
                "suppressed".into()
            ),
            (
                "mailgun".into(),
                "complaint".into(),
                Some("bob@example.org".into()),
                Some("message_id".into()),
                "unsubscribed".into()
            ),
            (
                "mailgun".into(),
                "delayed".into(),
                Some("carol@example.org".into()),
                Some("message_id".into()),
                "none".into()
            ),
        ]
    );

    // Not JSON: 400; signed but without an event: 400; too big: 413.
    let (status, _) = post(&app, "/webhooks/mailgun", &[], b"signature=x".to_vec()).await;
    assert_eq!(status, 400);
    let (status, answer) = post(
        &app,
        "/webhooks/mailgun",
        &[],
        mailgun_signed(json!({}), MAILGUN_KEY, now, "token-5"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = post(&app, "/webhooks/mailgun", &[], too_big()).await;
    assert_eq!(status, 413);
    assert_eq!(bounce_rows(&app).await.len(), 3);
}

/// SendGrid's headers for `body` signed at `timestamp` with `key`.
fn sendgrid_signed(key: &SigningKey, timestamp: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    let signature: p256::ecdsa::Signature = key.sign(&signed);
    vec![
        (
            "x-twilio-email-event-webhook-signature",
            BASE64.encode(signature.to_der().as_bytes()),
        ),
        (
            "x-twilio-email-event-webhook-timestamp",
            timestamp.to_owned(),
        ),
    ]
}

fn new_signing_key() -> SigningKey {
    SigningKey::from_slice(&rand::random::<[u8; 32]>()).expect("a P-256 scalar")
}

async fn sendgrid_batches_act_once_and_need_the_ecdsa_signature(backend: Backend) {
    let key = new_signing_key();
    let public_key = BASE64.encode(key.verifying_key().to_public_key_der().unwrap().as_bytes());
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.webhooks.sendgrid = Some(SendgridWebhook {
            public_key: public_key.parse().unwrap(),
        });
    })
    .await;
    let (_, bounced_message) = person(&app, "bounced@example.org").await;
    let (spam, _) = person(&app, "spam@example.org").await;
    // SendGrid's relay answers `250 Ok: queued as ID`; its events' sg_message_id begin with ID.
    relay_replied(&app, spam, "250 Ok: queued as 5Yp1qQ6pRbWkTPSDfBe6ZA").await;

    // The documented batch: processed, deferred, delivered, bounce, dropped, spamreport.
    let mut events = fixture("sendgrid-events.json");
    for event in events.as_array_mut().unwrap() {
        let name = event["event"].as_str().unwrap().to_owned();
        match name.as_str() {
            // The bounce (and the events before it) quote our Message-ID as smtp-id.
            "processed" | "deferred" | "delivered" | "bounce" => {
                event["email"] = json!("bounced@example.org");
                event["smtp-id"] = json!(bounced_message);
            }
            // A drop for an address that is no one's here: kept for review only.
            "dropped" => event["email"] = json!("stranger@example.org"),
            // The complaint names SendGrid's id only.
            "spamreport" => {
                event["email"] = json!("spam@example.org");
                event["smtp-id"] = json!("<unknown@ismtpd-555>");
                event["sg_message_id"] =
                    json!("5Yp1qQ6pRbWkTPSDfBe6ZA.filter0001.16648.5515E0B88.0");
            }
            other => panic!("an event the fixture should not have: {other}"),
        }
    }
    let body = serde_json::to_vec(&events).unwrap();
    let timestamp = (app.clock.now_ms() / 1000).to_string();

    // Signed by another key, over another timestamp, or not at all: refused.
    let mut other_timestamp = sendgrid_signed(&key, "1600000000", &body);
    other_timestamp[1].1 = timestamp.clone();
    let refused = [
        sendgrid_signed(&new_signing_key(), &timestamp, &body),
        other_timestamp,
        vec![("x-twilio-email-event-webhook-timestamp", timestamp.clone())],
        Vec::new(),
    ];
    for headers in refused {
        let (status, _) = post(&app, "/webhooks/sendgrid", &headers, body.clone()).await;
        assert_eq!(status, 401, "{headers:?}");
    }
    assert!(bounce_rows(&app).await.is_empty());

    let headers = sendgrid_signed(&key, &timestamp, &body);
    let (status, answer) = post(&app, "/webhooks/sendgrid", &headers, body.clone()).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 4 })));
    assert!(suppressed(&app, "bounced@example.org").await);
    assert!(!subscribed(&app, "bounced@example.org").await);
    assert!(suppressed(&app, "spam@example.org").await);
    assert!(!subscribed(&app, "spam@example.org").await);
    // The same batch again (SendGrid retrying): 200, nothing more.
    let (status, answer) = post(&app, "/webhooks/sendgrid", &headers, body).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 0 })));

    let rows = bounce_rows(&app).await;
    assert_eq!(
        rows,
        vec![
            (
                "sendgrid".into(),
                "delayed".into(),
                Some("bounced@example.org".into()),
                Some("message_id".into()),
                "none".into()
            ),
            (
                "sendgrid".into(),
                "hard".into(),
                Some("bounced@example.org".into()),
                Some("message_id".into()),
                "suppressed".into()
            ),
            (
                "sendgrid".into(),
                "hard".into(),
                Some("stranger@example.org".into()),
                None,
                "unmatched".into()
            ),
            (
                "sendgrid".into(),
                "complaint".into(),
                Some("spam@example.org".into()),
                Some("provider_id".into()),
                "unsubscribed".into()
            ),
        ]
    );

    // Signed but not a batch of events: 400; too big: 413.
    for malformed in [
        b"{\"event\":\"bounce\"}".to_vec(),
        b"[{\"email\":\"x@example.org\"}]".to_vec(),
    ] {
        let headers = sendgrid_signed(&key, &timestamp, &malformed);
        let (status, _) = post(&app, "/webhooks/sendgrid", &headers, malformed).await;
        assert_eq!(status, 400);
    }
    let big = too_big();
    let headers = sendgrid_signed(&key, &timestamp, &big);
    let (status, _) = post(&app, "/webhooks/sendgrid", &headers, big).await;
    assert_eq!(status, 413);
    assert_eq!(bounce_rows(&app).await.len(), 4);
}

/// While every webhook permit is taken (as by a flood of events), one more request gets 429
/// with `Retry-After` and changes nothing; once a permit is free the same event is recorded.
async fn webhooks_beyond_the_few_at_once_are_told_to_retry_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.webhooks.postmark = Some(PostmarkWebhook {
            username: "postmark".into(),
            password: Secret::new(POSTMARK_PASSWORD),
        });
    })
    .await;
    let (hard, _) = person(&app, "hard@example.org").await;
    relay_replied(
        &app,
        hard,
        "250 2.0.0 Ok: queued as 883953f4-6105-42a2-a16a-77a8eac79483",
    )
    .await;
    let mut bounce = fixture("postmark-bounce.json");
    bounce["Email"] = json!("hard@example.org");
    let bounce = serde_json::to_vec(&bounce).unwrap();
    let good = postmark_auth(POSTMARK_PASSWORD);

    let permits = app.state.webhook_permits().clone();
    let all = u32::try_from(sangha::web::WEBHOOK_CONCURRENCY).unwrap();
    let held = permits
        .clone()
        .try_acquire_many_owned(all)
        .expect("no webhook runs yet");
    let response = app
        .http
        .post(app.url("/webhooks/postmark"))
        .header("content-type", "application/json")
        .header(good[0].0, &good[0].1)
        .body(bounce.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(bounce_rows(&app).await.is_empty());
    assert!(subscribed(&app, "hard@example.org").await);
    // Signups are not webhooks: they go on while the webhooks are full.
    let signup = app
        .post_json(
            "/subscribe",
            &json!({"email": "new@example.org", "offerings": ["morning-meditation"]}),
        )
        .await;
    assert_eq!(signup.status().as_u16(), 202);

    drop(held);
    let (status, answer) = post(&app, "/webhooks/postmark", &good, bounce).await;
    assert_eq!((status, &answer), (200, &json!({ "recorded": 1 })));
    assert!(suppressed(&app, "hard@example.org").await);
    assert_eq!(
        permits.available_permits(),
        sangha::web::WEBHOOK_CONCURRENCY
    );
}
