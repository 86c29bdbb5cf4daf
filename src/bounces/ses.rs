//! Amazon SES notifications, which arrive as Amazon SNS messages: the SNS envelope read, the
//! URLs it names held to Amazon SNS hosts, its signature checked against the signing
//! certificate's key (`SignatureVersion` 1: SHA1withRSA, 2: SHA256withRSA, over the canonical
//! string of "Verifying the signatures of Amazon SNS messages"), and the SES event a
//! notification carries read into a report. Pure: the web layer fetches the certificate, only
//! ever from an [`SnsUrl`], and hands its bytes here.

use base64::Engine;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
    VerificationAlgorithm,
};
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::Value;

use super::{Incoming, Notice, Refused};
use crate::domain::{BounceKind, BounceSource};

fn malformed(what: impl std::fmt::Display) -> Refused {
    Refused::Malformed(what.to_string())
}

/// An `https` URL on an Amazon SNS host (`sns.REGION.amazonaws.com`, or `.amazonaws.com.cn`):
/// the only URLs a signing certificate is fetched from or a subscription confirmed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsUrl(String);

impl SnsUrl {
    /// `text` if it is an `https` URL on an Amazon SNS host, with no credentials or other port.
    pub fn parse(text: &str) -> Result<Self, Refused> {
        let url = url::Url::parse(text).map_err(|_| Refused::Unauthorized("unreadable SNS URL"))?;
        let on_sns = url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.port().is_none()
            && url.host_str().is_some_and(is_sns_host);
        if !on_sns {
            return Err(Refused::Unauthorized(
                "a URL that is not on an Amazon SNS host",
            ));
        }
        // As written: the signature covers the text SNS sent, not a normalized form.
        Ok(Self(text.to_owned()))
    }

    /// The URL as SNS wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `sns.REGION.amazonaws.com` or `sns.REGION.amazonaws.com.cn` (the URL parser lowercased it).
fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let Some(region) = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    region.len() >= 3
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// What an SNS message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsKind {
    /// A message published to the topic: here, an SES event.
    Notification,
    /// The first message to a new subscription, to be confirmed at its `SubscribeURL`.
    SubscriptionConfirmation,
    /// Sent when the subscription was removed.
    UnsubscribeConfirmation,
}

impl SnsKind {
    /// The `Type` (and `x-amz-sns-message-type` header) that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SnsKind::Notification => "Notification",
            SnsKind::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsKind::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// The hash an SNS signature is made with, by `SignatureVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureVersion {
    /// `1`: SHA1withRSA.
    Sha1,
    /// `2`: SHA256withRSA.
    Sha256,
}

/// One SNS message, read but not yet verified (see [`SnsMessage::verify`]).
#[derive(Debug, Clone)]
pub struct SnsMessage {
    pub kind: SnsKind,
    /// SNS's id of the message: a message delivered again keeps it.
    pub message_id: String,
    pub topic_arn: String,
    /// The notification's content (the SES event JSON), or the confirmation's text.
    pub message: String,
    /// Where the signing certificate is.
    pub signing_cert_url: SnsUrl,
    /// Where a subscription is confirmed (confirmations only).
    pub subscribe_url: Option<SnsUrl>,
    subject: Option<String>,
    timestamp: String,
    token: Option<String>,
    version: SignatureVersion,
    signature: Vec<u8>,
}

impl SnsMessage {
    /// Reads an SNS message body: 400 for a body that is not one, 401 for an unknown signature
    /// version, an unreadable signature, or a certificate or subscribe URL that is not on an
    /// Amazon SNS host (so nothing is ever fetched from elsewhere).
    pub fn parse(body: &[u8]) -> Result<Self, Refused> {
        /// The fields of an SNS message; all are strings.
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            #[serde(rename = "Type")]
            kind: String,
            message_id: String,
            topic_arn: String,
            message: String,
            timestamp: String,
            subject: Option<String>,
            token: Option<String>,
            #[serde(rename = "SubscribeURL")]
            subscribe_url: Option<String>,
            signature_version: Option<String>,
            signature: Option<String>,
            #[serde(rename = "SigningCertURL")]
            signing_cert_url: Option<String>,
        }
        let body: Body = serde_json::from_slice(body).map_err(malformed)?;
        let kind = match body.kind.as_str() {
            "Notification" => SnsKind::Notification,
            "SubscriptionConfirmation" => SnsKind::SubscriptionConfirmation,
            "UnsubscribeConfirmation" => SnsKind::UnsubscribeConfirmation,
            other => return Err(malformed(format!("an SNS message of type {other:?}"))),
        };
        let version = match body.signature_version.as_deref() {
            Some("1") => SignatureVersion::Sha1,
            Some("2") => SignatureVersion::Sha256,
            _ => return Err(Refused::Unauthorized("no known SignatureVersion")),
        };
        let signature = body
            .signature
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or(Refused::Unauthorized("no readable signature"))?;
        let signing_cert_url = SnsUrl::parse(
            body.signing_cert_url
                .as_deref()
                .ok_or(Refused::Unauthorized("no SigningCertURL"))?,
        )?;
        let subscribe_url = match kind {
            SnsKind::Notification => None,
            _ => {
                if body.token.is_none() {
                    return Err(malformed("a confirmation without its Token"));
                }
                let url = body
                    .subscribe_url
                    .as_deref()
                    .ok_or_else(|| malformed("a confirmation without its SubscribeURL"))?;
                Some(SnsUrl::parse(url)?)
            }
        };
        Ok(Self {
            kind,
            message_id: body.message_id,
            topic_arn: body.topic_arn,
            message: body.message,
            signing_cert_url,
            subscribe_url,
            subject: body.subject,
            timestamp: body.timestamp,
            token: body.token,
            version,
            signature,
        })
    }

    /// The text SNS signs: each field's name and value on lines of their own, in this order,
    /// `Subject` only when there is one; a confirmation has `SubscribeURL` and `Token` instead.
    fn string_to_sign(&self) -> String {
        let subscribe_url = self.subscribe_url.as_ref().map(SnsUrl::as_str);
        let fields: &[(&str, Option<&str>)] = match self.kind {
            SnsKind::Notification => &[
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("Subject", self.subject.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(self.kind.as_str())),
            ],
            SnsKind::SubscriptionConfirmation | SnsKind::UnsubscribeConfirmation => &[
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("SubscribeURL", subscribe_url),
                ("Timestamp", Some(&self.timestamp)),
                ("Token", self.token.as_deref()),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(self.kind.as_str())),
            ],
        };
        let mut text = String::new();
        for (name, value) in fields {
            if let Some(value) = value {
                for part in [name, "\n", value, "\n"] {
                    text.push_str(part);
                }
            }
        }
        text
    }

    /// Whether the signature was made with the key of the certificate at `signing_cert_url`.
    pub fn verify(&self, key: &SnsKey) -> Result<(), Refused> {
        let algorithm: &'static dyn VerificationAlgorithm = match self.version {
            SignatureVersion::Sha1 => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            SignatureVersion::Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &key.rsa_public_key)
            .verify(self.string_to_sign().as_bytes(), &self.signature)
            .map_err(|_| Refused::Unauthorized("wrong signature"))
    }
}

/// The RSA public key of an SNS signing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsKey {
    /// PKCS#1 `RSAPublicKey` DER, as ring reads it.
    rsa_public_key: Vec<u8>,
}

impl SnsKey {
    /// The key of the (first) certificate in a PEM file; says why when there is none.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = CertificateDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let certificate = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let spki = certificate.subject_public_key_info();
        let spki = SubjectPublicKeyInfoRef::try_from(spki.as_ref())
            .map_err(|e| format!("unreadable public key: {e}"))?;
        if spki.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
            return Err("not an RSA key".into());
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("unreadable RSA key")?;
        Ok(Self {
            rsa_public_key: key.to_vec(),
        })
    }
}

/// The SES event in a verified notification, as a report known by the SNS `MessageId`: a
/// `Bounce` (`Permanent` is hard, `Transient` soft) or `Complaint` for each recipient it
/// names, any other event (`Delivery`, `Send`, `Open`…) as none. It is matched by the envelope
/// sender it was sent with (our VERP address), then SES's message id (in the relay's
/// `250 Ok ID`), then the Message-ID among its headers.
pub fn ses_event(notification: &SnsMessage) -> Result<Option<Incoming>, Refused> {
    let event: Value = serde_json::from_str(&notification.message)
        .map_err(|e| malformed(format!("the SES event is not JSON: {e}")))?;
    let text = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // `notificationType` from identity notifications, `eventType` from event publishing.
    let Some(name) = text(&event, "/notificationType").or_else(|| text(&event, "/eventType"))
    else {
        return Err(malformed(
            "an SES event without notificationType or eventType",
        ));
    };
    let (kind, recipients, status, diagnostic) = match name.as_str() {
        "Bounce" => {
            let bounce_type = text(&event, "/bounce/bounceType");
            let kind = match bounce_type.as_deref() {
                Some("Permanent") => BounceKind::Hard,
                Some("Transient") => BounceKind::Soft,
                _ => BounceKind::Unknown,
            };
            let status = [bounce_type, text(&event, "/bounce/bounceSubType")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            (kind, "/bounce/bouncedRecipients", status, None)
        }
        "Complaint" => {
            let feedback = text(&event, "/complaint/complaintFeedbackType");
            // "not spam" is no one's wish to leave (as for a feedback report by mail).
            let kind = match feedback.as_deref() {
                Some("not-spam") => BounceKind::Unknown,
                _ => BounceKind::Complaint,
            };
            let status = format!(
                "complaint: {}",
                feedback.as_deref().unwrap_or("unspecified")
            );
            let agent = text(&event, "/complaint/userAgent");
            (kind, "/complaint/complainedRecipients", status, agent)
        }
        _ => return Ok(None),
    };
    let notices: Vec<Notice> = event
        .pointer(recipients)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|recipient| Notice {
            kind,
            recipient: text(recipient, "/emailAddress"),
            status: text(recipient, "/status").or_else(|| Some(status.clone())),
            diagnostic: text(recipient, "/diagnosticCode").or_else(|| diagnostic.clone()),
        })
        .collect();
    if notices.is_empty() {
        return Err(malformed(format!("an SES {name} that names no recipient")));
    }
    let message_id_header = event
        .pointer("/mail/headers")
        .and_then(Value::as_array)
        .and_then(|headers| {
            headers.iter().find(|h| {
                h.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case("Message-ID"))
            })
        })
        .and_then(|h| text(h, "/value"));
    Ok(Some(Incoming {
        source: BounceSource::Ses,
        report_key: format!("ses:{}", notification.message_id),
        envelope_to: text(&event, "/mail/source")
            .map(|source| address_of(&source).to_owned())
            .into_iter()
            .collect(),
        original_message_id: text(&event, "/mail/commonHeaders/messageId").or(message_id_header),
        provider_id: text(&event, "/mail/messageId"),
        raw: Some(notification.message.clone()),
        notices,
    }))
}

/// The address in `Name <address>`, or the whole text.
fn address_of(source: &str) -> &str {
    match (source.rfind('<'), source.rfind('>')) {
        (Some(start), Some(end)) if start < end => &source[start + 1..end],
        _ => source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_on_sns_hosts_are_accepted() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://SNS.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        ] {
            assert!(SnsUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.example.org/cert.pem",
            "https://example.org/sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.amazonaws.com/cert.pem",
            "https://s3.us-east-1.amazonaws.com/cert.pem",
            "https://evil.sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://user@sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us_east.amazonaws.com/cert.pem",
            "not a url",
        ] {
            assert!(SnsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_string_to_sign_lists_the_fields_of_each_type_in_order() {
        let notification = |subject: Option<&str>| {
            let mut body = serde_json::json!({
                "Type": "Notification", "MessageId": "m", "TopicArn": "arn:t",
                "Message": "{}", "Timestamp": "2012-05-02T00:54:06.655Z",
                "SignatureVersion": "1", "Signature": "AA==",
                "SigningCertURL": "https://sns.us-west-2.amazonaws.com/c.pem",
            });
            if let Some(subject) = subject {
                body["Subject"] = subject.into();
            }
            SnsMessage::parse(body.to_string().as_bytes()).unwrap()
        };
        assert_eq!(
            notification(Some("Hi")).string_to_sign(),
            "Message\n{}\nMessageId\nm\nSubject\nHi\nTimestamp\n2012-05-02T00:54:06.655Z\n\
             TopicArn\narn:t\nType\nNotification\n"
        );
        assert_eq!(
            notification(None).string_to_sign(),
            "Message\n{}\nMessageId\nm\nTimestamp\n2012-05-02T00:54:06.655Z\n\
             TopicArn\narn:t\nType\nNotification\n"
        );
        let confirmation = serde_json::json!({
            "Type": "SubscriptionConfirmation", "MessageId": "m", "TopicArn": "arn:t",
            "Token": "tok", "Message": "confirm", "Timestamp": "t",
            "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
            "SignatureVersion": "2", "Signature": "AA==",
            "SigningCertURL": "https://sns.us-west-2.amazonaws.com/c.pem",
        });
        let confirmation = SnsMessage::parse(confirmation.to_string().as_bytes()).unwrap();
        assert_eq!(
            confirmation.string_to_sign(),
            "Message\nconfirm\nMessageId\nm\n\
             SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\nt\nToken\ntok\nTopicArn\narn:t\nType\nSubscriptionConfirmation\n"
        );
    }

    #[test]
    fn a_display_name_around_the_source_is_dropped() {
        assert_eq!(address_of("\"News\" <b+x@example.org>"), "b+x@example.org");
        assert_eq!(address_of("b+x@example.org"), "b+x@example.org");
    }
}
