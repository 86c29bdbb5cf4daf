//! `[webhooks.*]`: the email providers whose event webhooks Sangha accepts (bounces and
//! complaints), each off unless its section is there, each with the credential its provider
//! signs or authenticates with.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, invalid, text};

/// `[webhooks]`: one optional section per provider; `POST /webhooks/PROVIDER` answers 404
/// while its section is missing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ses: Option<SesWebhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postmark: Option<PostmarkWebhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailgun: Option<MailgunWebhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendgrid: Option<SendgridWebhook>,
}

/// `[webhooks.ses]`: Amazon SES notifications through an SNS topic. Messages are checked
/// against Amazon's signing certificate, so no secret is needed; naming the topic refuses any
/// other (recommended: anyone can point another SNS topic at the URL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SesWebhook {
    /// The ARN of the SNS topic SES publishes to (`arn:aws:sns:REGION:ACCOUNT:NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_arn: Option<String>,
}

/// `[webhooks.postmark]`: the HTTP basic auth credentials put in the webhook's URL at Postmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostmarkWebhook {
    pub username: String,
    /// Best from the environment: `SANGHA__WEBHOOKS__POSTMARK__PASSWORD`.
    pub password: Secret,
}

/// `[webhooks.mailgun]`: the HTTP webhook signing key of the Mailgun account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailgunWebhook {
    /// Best from the environment: `SANGHA__WEBHOOKS__MAILGUN__SIGNING_KEY`.
    pub signing_key: Secret,
}

/// `[webhooks.sendgrid]`: the verification key of SendGrid's signed event webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendgridWebhook {
    /// Base64 of the DER public key (ECDSA P-256), as SendGrid's settings show it.
    #[serde(with = "text")]
    pub public_key: SendgridKey,
}

/// SendGrid's ECDSA P-256 verification key, read once from its base64 DER text.
#[derive(Clone)]
pub struct SendgridKey {
    text: String,
    key: p256::ecdsa::VerifyingKey,
}

impl SendgridKey {
    /// The key signatures are checked against.
    pub fn verifying_key(&self) -> &p256::ecdsa::VerifyingKey {
        &self.key
    }
}

impl FromStr for SendgridKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let der = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "must be base64 (SendGrid's verification key, without PEM lines)")?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map_err(|_| "must be the DER of an ECDSA P-256 public key (SubjectPublicKeyInfo)")?;
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }
}

impl fmt::Display for SendgridKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SendgridKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl WebhooksConfig {
    /// A configured provider with an empty credential is refused: it would accept anyone.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(topic) = self.ses.as_ref().and_then(|s| s.topic_arn.as_deref())
            && !(topic.starts_with("arn:aws") && topic.split(':').count() == 6)
        {
            return Err(invalid(
                "webhooks.ses.topic_arn",
                "must be an SNS topic ARN: arn:aws:sns:REGION:ACCOUNT:NAME",
            ));
        }
        if let Some(postmark) = &self.postmark {
            if postmark.username.is_empty() {
                return Err(invalid("webhooks.postmark.username", "must not be empty"));
            }
            if postmark.password.is_empty() {
                return Err(invalid(
                    "webhooks.postmark.password",
                    "is missing: set SANGHA__WEBHOOKS__POSTMARK__PASSWORD",
                ));
            }
        }
        if let Some(mailgun) = &self.mailgun
            && mailgun.signing_key.is_empty()
        {
            return Err(invalid(
                "webhooks.mailgun.signing_key",
                "is missing: set SANGHA__WEBHOOKS__MAILGUN__SIGNING_KEY",
            ));
        }
        Ok(())
    }
}
