//! One message of every kind Sangha sends (confirmation, course lesson, campaign, test-send),
//! signed with an RSA and an Ed25519 DKIM key, as the SMTP server received it: the bytes the
//! DKIM and spam-filter tests judge.

use std::path::PathBuf;

use reqwest::StatusCode;
use sangha::config::{Config, DkimKeyConfig};
use sangha::mail::{DkimAlgorithm, generate_key, record_of_pem};

use super::smtp::{ReceivedMessage, TestSmtpServer};
use super::{
    Backend, DEADLINE, Options, TestApp, confirm_path_in, relay_config, relay_env, stderr,
    test_send,
};

/// The course the signup joins, so that its welcome lesson goes out on confirmation.
const COURSE: &str = "orgasmic-queen";

/// Two DKIM keys (`rsa1`, `ed1`) in a temporary folder, with their TXT records.
pub struct DkimKeys {
    _dir: tempfile::TempDir,
    /// (selector, key file)
    pub files: Vec<(String, PathBuf)>,
    /// The TXT records, as `name=value`.
    pub records: Vec<String>,
}

impl DkimKeys {
    /// An RSA 2048 and an Ed25519 key for `domain`.
    pub fn generate(domain: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let mut records = Vec::new();
        for (selector, algorithm) in [
            ("rsa1", DkimAlgorithm::Rsa),
            ("ed1", DkimAlgorithm::Ed25519),
        ] {
            let pem = generate_key(algorithm).unwrap();
            let path = dir.path().join(format!("{selector}.pem"));
            std::fs::write(&path, &pem).unwrap();
            let record = record_of_pem(selector, domain, pem.as_bytes()).unwrap();
            records.push(format!("{}={}", record.name, record.value));
            files.push((selector.to_owned(), path));
        }
        Self {
            _dir: dir,
            files,
            records,
        }
    }

    /// The configuration change that signs with both keys.
    fn configure(&self) -> impl FnOnce(&mut Config) {
        let files = self.files.clone();
        move |c| {
            c.dkim.keys = files
                .into_iter()
                .map(|(selector, file)| DkimKeyConfig { selector, file })
                .collect();
        }
    }

    /// `SANGHA__DKIM__KEYS` for a `sangha` process that signs with both keys.
    fn env(&self) -> (&'static str, String) {
        let files = self
            .files
            .iter()
            .map(|(s, f)| format!("{{selector=\"{s}\",file=\"{}\"}}", f.display()))
            .collect::<Vec<_>>()
            .join(",");
        ("SANGHA__DKIM__KEYS", format!("[{files}]"))
    }
}

/// One received message of each kind.
pub struct EveryKind {
    pub confirmation: ReceivedMessage,
    pub lesson: ReceivedMessage,
    pub campaign: ReceivedMessage,
    pub test_send: ReceivedMessage,
}

impl EveryKind {
    /// Each message with the name of its kind.
    pub fn named(&self) -> [(&'static str, &ReceivedMessage); 4] {
        [
            ("confirmation", &self.confirmation),
            ("course lesson", &self.lesson),
            ("campaign", &self.campaign),
            ("test-send", &self.test_send),
        ]
    }
}

/// Sends one message of every kind through a test SMTP server, signed with `keys`: a signup
/// to morning-meditation and the course (its confirmation, then the welcome lesson once
/// confirmed), a campaign of `campaign` (a content file's text), and a test-send of it from
/// the command line, with the keys given in the environment.
pub async fn every_kind_signed(keys: &DkimKeys, campaign: &str) -> EveryKind {
    let server = TestSmtpServer::start().await;
    let relay = relay_config(server.port());
    let dkim = keys.configure();
    let app = TestApp::spawn_with(Backend::Sqlite, Options::default(), |c| {
        relay(c);
        dkim(c);
    })
    .await;

    app.signup("radha@example.org", &["morning-meditation", COURSE])
        .await;
    let confirmation = server.wait_for_messages(1, DEADLINE).await[0].clone();
    let r = app
        .post_form(&confirm_path_in(&confirmation.data), "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let lesson = server.wait_for_messages(2, DEADLINE).await[1].clone();

    let content = app.write_content("campaign.md", campaign);
    let send = app.schedule_now("morning-meditation", &content);
    app.wait_for_send_done(send).await;
    let campaign = server.wait_for_messages(3, DEADLINE).await[2].clone();

    let mut env = relay_env(server.port());
    env.push(keys.env());
    let out = test_send(&app.config, &content, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let test_send = server.wait_for_messages(4, DEADLINE).await[3].clone();
    app.stop().await;

    EveryKind {
        confirmation,
        lesson,
        campaign,
        test_send,
    }
}
