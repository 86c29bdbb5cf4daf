//! Where messages go: the file transport (one `.eml` per message, the zero-setup default) or
//! SMTP through lettre's pooled async transport.

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, TlsMode, TransportKind};

#[derive(Clone)]
pub enum Transport {
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::File(_, dir) => write!(f, "Transport::File({})", dir.display()),
            Transport::Smtp(_) => f.write_str("Transport::Smtp"),
        }
    }
}

/// Whether trying again later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// 4xx replies, lost connections, timeouts: retry later.
    Transient,
    /// 5xx replies: retrying will not help.
    Permanent,
    /// A 5.1.x reply: the address itself is bad; stop mailing it.
    BadRecipient,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: SendErrorKind,
    pub message: String,
}

impl Transport {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match config.mail.transport {
            TransportKind::File => {
                let dir = config.outbox_dir();
                std::fs::create_dir_all(&dir).map_err(|e| {
                    anyhow::anyhow!("cannot create outbox folder {}: {e}", dir.display())
                })?;
                Ok(Transport::File(AsyncFileTransport::new(&dir), dir))
            }
            TransportKind::Smtp => {
                let smtp = &config.smtp;
                let builder = match smtp.tls {
                    TlsMode::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                    TlsMode::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_secs(smtp.timeout_seconds)))
                    .pool_config(PoolConfig::new().max_size(smtp.pool_size));
                if !smtp.username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        smtp.username.clone(),
                        smtp.password.expose().to_owned(),
                    ));
                }
                Ok(Transport::Smtp(builder.build()))
            }
        }
    }

    /// Hands one message over. Returns the server's reply (or the file's id).
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        match self {
            Transport::File(file, _) => file.send(message).await.map_err(|e| SendError {
                kind: SendErrorKind::Transient,
                message: format!("file transport: {e}"),
            }),
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => Ok(format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) => Err(classify_smtp_error(&e)),
            },
        }
    }
}

/// Sorts an SMTP failure by what the server said (RFC 5321 §4.2.1 reply classes, RFC 3463
/// enhanced status codes). Anything that is not a 5xx reply — a 4xx, a lost connection, a
/// timeout — may succeed later.
fn classify_smtp_error(err: &lettre::transport::smtp::Error) -> SendError {
    let message = error_chain(err);
    let kind = if err.is_permanent() {
        if message.contains(" 5.1.") || message.contains("5.1.1") {
            SendErrorKind::BadRecipient
        } else {
            SendErrorKind::Permanent
        }
    } else {
        SendErrorKind::Transient
    };
    SendError { kind, message }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
