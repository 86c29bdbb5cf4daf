//! Where messages go: the file transport (one `.eml` per message, the zero-setup default) or
//! SMTP through our own pool of sessions ([`super::smtp`]).

use std::path::PathBuf;

use lettre::Message;
use rand::RngCore;

use super::smtp::SmtpPool;
use crate::config::{Config, TransportKind};

#[derive(Clone)]
pub enum Transport {
    /// Writes each message as `<random>.eml` in the folder.
    File(PathBuf),
    Smtp(SmtpPool),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::File(dir) => write!(f, "Transport::File({})", dir.display()),
            Transport::Smtp(pool) => write!(f, "Transport::Smtp({pool:?})"),
        }
    }
}

/// Writes a message into the outbox folder atomically: first under a hidden temporary name,
/// then renamed, so whoever watches the folder never reads half a message.
async fn write_eml(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<String> {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let name: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.eml.tmp"));
    let path = dir.join(format!("{name}.eml"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(format!("written to {}", path.display()))
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
                Ok(Transport::File(dir))
            }
            // EHLO announces the Message-ID domain: a name the operator controls and that
            // config validation has checked, where the machine's own hostname is often a
            // container id that relays refuse as not fully qualified (and that would show up
            // in every Received header).
            TransportKind::Smtp => Ok(Transport::Smtp(SmtpPool::new(
                &config.smtp,
                config.smtp_ca_file().as_deref(),
                &config.mail.message_id_domain,
            )?)),
        }
    }

    /// Hands one message over. Returns the server's reply (or the file's id).
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        match self {
            Transport::File(dir) => {
                write_eml(dir, &message.formatted())
                    .await
                    .map_err(|e| SendError {
                        kind: SendErrorKind::Transient,
                        message: format!("file transport: {e}"),
                    })
            }
            Transport::Smtp(pool) => pool.send(&message).await,
        }
    }

    /// Ends idle SMTP sessions politely (`QUIT`); call on shutdown. Sending afterwards still
    /// works and opens new sessions.
    pub async fn close(&self) {
        if let Transport::Smtp(pool) = self {
            pool.close().await;
        }
    }
}
