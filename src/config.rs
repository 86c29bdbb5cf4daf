//! Configuration: built-in defaults, then `config.toml` (or `--config PATH`), then
//! `SANGHA__SECTION__KEY` environment variables; the last one wins. Unknown keys are an error,
//! values are checked once here, and secrets never appear in `Debug` or in `config check`.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use lettre::message::Mailbox;

use crate::domain::{OfferingKind, Slug, TimeOfDay, Timezone, TokenKey, Weekday};

mod webhooks;

pub use webhooks::{
    MailgunWebhook, PostmarkWebhook, SendgridKey, SendgridWebhook, SesWebhook, WebhooksConfig,
};

/// The whole configuration tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder for the SQLite file, the generated token key and the file outbox.
    pub data_dir: PathBuf,
    pub site: SiteConfig,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub mail: MailConfig,
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub dkim: DkimConfig,
    pub tokens: TokenConfig,
    pub signup: SignupConfig,
    pub worker: WorkerConfig,
    pub dns: DnsConfig,
    #[serde(default)]
    pub bounces: BouncesConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub offerings: Vec<OfferingConfig>,
    /// Folder the config was read from; templates are looked up next to it.
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

/// `[site]`: the practice's name and time zone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The name people know the practice by; shown on pages and in emails.
    pub name: String,
    /// The owner's IANA time zone: the default for `schedule --at` and for subscribers who
    /// gave none.
    #[serde(with = "text")]
    pub timezone: Timezone,
    /// Where alerts go (a send that paused itself, bounces or complaints past their share,
    /// mail waiting too long); empty: alerts are only logged and listed by `sangha alerts`.
    #[serde(
        default,
        serialize_with = "serialize_optional_address",
        deserialize_with = "optional_address"
    )]
    pub owner_email: Option<lettre::Address>,
}

/// `[server]`: where the web server listens and how it treats connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address and port the web server listens on.
    #[serde(serialize_with = "text::serialize", deserialize_with = "bind_address")]
    pub bind: SocketAddr,
    /// Public address of the site, used to build every link in emails.
    pub base_url: String,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins allowed to call the JSON API from a browser (CORS). Empty: none.
    pub cors_origins: Vec<String>,
    /// A request's head (request line and headers) must arrive within this many seconds of the
    /// server starting to wait for it: on a new connection and between kept-alive requests.
    pub header_read_timeout_seconds: u64,
    /// A connection on which nothing is read or written for this many seconds is closed (a
    /// stalled body, a client that stops reading the answer).
    pub idle_timeout_seconds: u64,
}

/// `[database]`: which database, and the pool's size and patience.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user:pass@host/db`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for a database connection before giving up (at start and later).
    pub connect_timeout_seconds: u64,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .finish()
    }
}

/// A database URL as it may be shown: every password in it replaced by `[redacted]`. The one
/// function for printing a URL, in `config check`, `Debug` and error messages.
///
/// The password forms: the userinfo (`postgres://user:secret@host/db`), and any query parameter
/// whose name holds `password` (`?password=…`, which sqlx reads; `?sslpassword=…`, which libpq
/// reads). The URL is read with the `url` crate, as sqlx reads it, so what sqlx would take as a
/// password is what is hidden. A URL that cannot be read but could hold a secret (an `@` or
/// the word `password`) is not shown at all beyond its scheme.
pub fn redact_url_password(raw: &str) -> String {
    const REDACTED: &str = "[redacted]";
    let Ok(url) = url::Url::parse(raw) else {
        let lower = raw.to_ascii_lowercase();
        if raw.contains('@') || lower.contains("password") {
            let scheme = raw.split_once(':').map_or("", |(scheme, _)| scheme);
            return format!("{scheme}:[not shown: not a URL that can be read]");
        }
        return raw.to_owned();
    };
    let secret_key = |key: &str| key.to_ascii_lowercase().contains("password");
    let query_secret = url.query_pairs().any(|(key, _)| secret_key(&key));
    if url.password().is_none() && !query_secret {
        return raw.to_owned();
    }
    let mut shown = url[..url::Position::BeforeUsername].to_owned();
    if url.password().is_some() {
        shown.push_str(&format!("{}:{REDACTED}@", url.username()));
    } else if !url.username().is_empty() {
        shown.push_str(&format!("{}@", url.username()));
    }
    shown.push_str(&url[url::Position::BeforeHost..url::Position::AfterPath]);
    if let Some(query) = url.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                let decoded: String = form_urlencoded::parse(key.as_bytes())
                    .map(|(k, v)| format!("{k}{v}"))
                    .collect();
                if secret_key(&decoded) {
                    format!("{key}={REDACTED}")
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = url.fragment() {
        shown.push('#');
        shown.push_str(fragment);
    }
    shown
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url_password(url))
}

/// How emails leave: written to files, or sent to an SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    File,
    Smtp,
}

/// `[mail]`: the sender, Message-IDs, the outbox folder and the unsubscribe address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub transport: TransportKind,
    /// The From header, `Name <address>`.
    #[serde(serialize_with = "text::serialize", deserialize_with = "from_mailbox")]
    pub from: Mailbox,
    /// Right-hand side of every Message-ID; empty means the domain of `from`
    /// (see [`Config::message_id_domain`]).
    #[serde(default)]
    pub message_id_domain: String,
    /// The envelope sender (Return-Path), where bounces go: `bounces@example.com`, a mailbox
    /// that takes `+tag` addresses. When set, each delivery goes out from its own VERP address
    /// `bounces+TAG@example.com` naming it; empty means the `from` address, without tags.
    #[serde(
        default,
        serialize_with = "serialize_return_path",
        deserialize_with = "return_path"
    )]
    pub return_path: Option<lettre::Address>,
    /// Where the file transport writes `.eml` files; empty means `data_dir/outbox`.
    pub outbox_dir: String,
    /// An address that unsubscribes by email, offered in List-Unsubscribe beside the link;
    /// empty for none.
    pub unsubscribe_mailto: String,
}

/// `[dkim]`: the keys that sign every message; none means messages go out unsigned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The `d=` domain of the signatures; empty means the domain of `mail.from`.
    #[serde(default)]
    pub domain: String,
    /// One signature per key (an RSA and an Ed25519 key side by side are usual).
    #[serde(default)]
    pub keys: Vec<DkimKeyConfig>,
}

/// One DKIM key: its selector and its private key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The `s=` selector: the key is published at `selector._domainkey.domain`.
    pub selector: String,
    /// The PEM private key (PKCS#8, or PKCS#1 for RSA); relative to `data_dir`. Only the path
    /// is in the config, so the key never shows in `config check`.
    pub file: PathBuf,
}

/// How the SMTP connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

/// `[smtp]`: the relay, its credentials, pool, rate and the certificates it is trusted by.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    pub password: Secret,
    pub pool_size: u32,
    /// Messages per second across all connections; 0 means unlimited.
    pub rate_per_second: u32,
    pub timeout_seconds: u64,
    /// Which certificate authorities a TLS relay's certificate may come from.
    pub trust: TrustStore,
    /// A PEM file of CA certificates trusted besides `trust` (a private CA); relative paths
    /// are read from the folder of the config file.
    pub ca_file: Option<PathBuf>,
    /// When set, the relay's own (end-entity) certificate must have this SHA-256, and only
    /// that is checked: no CA, no host name (as Postfix's `fingerprint` security level).
    pub certificate_sha256: Option<CertificateSha256>,
    /// Accepts any certificate: encryption without knowing who is at the other end.
    pub danger_accept_invalid_certs: bool,
}

/// A configured host without spaces or IPv6 brackets, and whether it is this machine.
fn host_and_loopback(raw: &str) -> (&str, bool) {
    let host = raw.trim().trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (host, loopback)
}

impl SmtpConfig {
    /// Settings that work but are likely mistakes, each with its fix. `config check` prints
    /// them and `serve` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let (host, loopback) = host_and_loopback(&self.host);
        if !self.username.is_empty() && self.tls == TlsMode::None && !loopback {
            warnings.push(format!(
                "smtp.username is set with smtp.tls = \"none\" and a relay on another machine \
                 ({host}): the password and every message cross the network in clear; set \
                 smtp.tls = \"starttls\" (usually port 587) or \"tls\" (port 465)"
            ));
        }
        if self.danger_accept_invalid_certs && self.tls != TlsMode::None {
            warnings.push(format!(
                "smtp.danger_accept_invalid_certs = true: the relay's certificate ({host}) is \
                 NOT checked; anyone between here and the relay can read the mail and the SMTP \
                 password. Use smtp.ca_file or smtp.certificate_sha256 instead"
            ));
        }
        if self.trust == TrustStore::Builtin
            && self.tls != TlsMode::None
            && (std::env::var_os("SSL_CERT_FILE").is_some()
                || std::env::var_os("SSL_CERT_DIR").is_some())
        {
            warnings.push(
                "SSL_CERT_FILE or SSL_CERT_DIR is set, but smtp.trust = \"builtin\" does not read \
                 them; set smtp.trust = \"both\" (or \"system\") to trust what they name"
                    .to_owned(),
            );
        }
        if self.tls == TlsMode::Starttls && self.port == 465 {
            warnings.push(
                "smtp.port = 465 with smtp.tls = \"starttls\": port 465 speaks TLS from the \
                 first byte, so the session waits for a greeting that never comes; set \
                 smtp.tls = \"tls\""
                    .to_owned(),
            );
        }
        if self.tls == TlsMode::Tls && matches!(self.port, 25 | 587) {
            warnings.push(format!(
                "smtp.port = {} with smtp.tls = \"tls\": that port starts in plain text and \
                 upgrades with STARTTLS; set smtp.tls = \"starttls\" (or use port 465)",
                self.port
            ));
        }
        warnings
    }
}

/// The certificate authorities trusted for SMTP over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustStore {
    /// The Mozilla roots built into the binary (webpki-roots): the same on every machine.
    Builtin,
    /// The operating system's store, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set.
    System,
    /// Both of them.
    Both,
}

/// The SHA-256 of a DER certificate, written as 64 hex digits, with or without colons
/// (as `openssl x509 -noout -fingerprint -sha256` prints it).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertificateSha256([u8; 32]);

impl CertificateSha256 {
    /// Reads 64 hex digits, with or without colons.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text.split_once('=').map_or(text, |(label, hex)| {
            if label.to_ascii_lowercase().contains("sha256") {
                hex
            } else {
                text
            }
        });
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        if hex.len() != 64 || !hex.is_ascii() {
            return Err("must be 64 hex digits (a SHA-256), colons allowed".to_owned());
        }
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "must be 64 hex digits (a SHA-256), colons allowed".to_owned())?;
        }
        Ok(CertificateSha256(bytes))
    }

    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest;
        CertificateSha256(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for CertificateSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&hex.join(":"))
    }
}

impl fmt::Debug for CertificateSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateSha256({self})")
    }
}

impl TryFrom<String> for CertificateSha256 {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<CertificateSha256> for String {
    fn from(sha: CertificateSha256) -> String {
        sha.to_string()
    }
}

/// `[tokens]`: the keys that sign links, and how long a confirmation link works.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Base64 key of at least 32 bytes. Empty: generated into `data_dir/token.key` on first run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted",
        deserialize_with = "token_key"
    )]
    pub key: Option<TokenKey>,
    /// Keys that signed links before the current one (base64, like `key`). Links signed with
    /// them keep working and suppression-list entries written under them are still recognised;
    /// new links are signed with `key` only. To rotate: move the current key here, set a new
    /// `key` (see SECURITY.md).
    #[serde(serialize_with = "redacted", deserialize_with = "token_keys")]
    pub previous_keys: Vec<TokenKey>,
    /// How long a confirmation link works.
    pub confirm_ttl_hours: u32,
}

/// `[signup]`: the consent text and the limits that keep the signup form from abuse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupConfig {
    /// Shown above the signup button; its SHA-256 is kept in every consent record.
    pub consent_text: String,
    /// At most one confirmation email per address in this many minutes.
    pub confirmation_cooldown_minutes: u32,
    /// At most this many confirmation emails per recipient domain per hour (0 = no cap), so
    /// a flood of signups cannot make one mail provider see us as a spammer. Confirmations
    /// over the cap are queued for a later hour, never dropped.
    pub confirmations_per_domain_per_hour: u32,
    /// Hours after a signup nobody confirmed when one reminder goes out, under the same
    /// cooldown and cap as a confirmation (0 = no reminder).
    pub confirmation_reminder_after_hours: u32,
    /// Days after their last signup when people who never confirmed are deleted, keeping
    /// nothing but a suppression-list entry they already had (0 = kept).
    pub unconfirmed_delete_after_days: u32,
    /// Signups for addresses at one domain accepted per hour from one network (an IPv4 /24 or
    /// an IPv6 /48) (0 = no limit): what one source can do to a domain, so that a flood from
    /// one place cannot use up the domain's hour for everyone else.
    pub signups_per_domain_per_network_per_hour: u32,
    /// Signup requests allowed per client IP per minute (0 = no limit).
    pub rate_limit_per_minute: u32,
    /// Requests a client IP may make in a burst before the per-minute rate applies.
    pub rate_limit_burst: u32,
    /// Name of the hidden field that only bots fill in.
    pub honeypot_field: String,
}

/// `[worker]`: how deliveries are claimed, retried, paused and fanned out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// How often an idle worker looks for due deliveries.
    pub poll_interval_ms: u64,
    /// Deliveries claimed per round trip.
    pub batch_size: u32,
    /// How long a claim holds before another worker may take the row. A worker claims no more
    /// than it can send within half of it, and extends it for a batch that runs longer.
    pub lease_seconds: u64,
    /// Messages in flight at once per worker process.
    pub concurrency: u32,
    /// Attempts before a transiently failing delivery is given up.
    pub max_attempts: u32,
    /// A send pauses itself once this many deliveries failed…
    pub pause_after_failures: u32,
    /// …and they are at least this percentage of those tried.
    pub pause_failure_percent: u32,
    /// Deliveries created per transaction when a send's time comes.
    pub fanout_batch_size: u32,
    /// Local-time sends, recurring occurrences and course lessons that fell due while the
    /// service was down are sent late within this many minutes, and skipped (and reported)
    /// beyond it.
    pub grace_minutes: u32,
    /// `sends list` and the log warn when a recurring schedule has fewer unused pieces left.
    pub recurring_warn_below: u32,
    /// On SIGTERM or Ctrl-C, how long messages already being handed over may take to finish
    /// (the site keeps answering meanwhile). Those still unfinished are dropped; their rows stay
    /// claimed and are sent again once the lease runs out, as after a crash.
    pub shutdown_grace_seconds: u64,
}

/// `[dns]`: where `sangha doctor` looks up SPF, DKIM and DMARC records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers to ask (`IP:PORT`); empty: those of the system (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

/// `[log]`: how log lines are written (to stderr; the level comes from `RUST_LOG`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// The shape of a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, for a person reading it.
    #[default]
    Text,
    /// One JSON object per line, for a log collector: the span fields (the request id of a
    /// web request, the send and delivery ids of a delivery) on every line within them.
    Json,
}

/// `[metrics]`: the Prometheus endpoint, on an address of its own (never the site's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` answers (`127.0.0.1:9464`); empty: no metrics endpoint.
    #[serde(
        serialize_with = "serialize_optional_bind",
        deserialize_with = "optional_bind"
    )]
    pub bind: Option<SocketAddr>,
}

/// `[alerts]`: when the owner is told that something needs her (see `site.owner_email`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Deliveries due for this many minutes without going out raise an alert; 0: never.
    pub queue_late_minutes: u32,
    /// A send whose spam complaints reach this percentage of the people it reached raises an
    /// alert (mailbox providers start filtering a sender around 0.3%).
    pub complaint_percent: f64,
    /// Seconds between two looks at the queue and at alerts waiting to be emailed.
    pub check_seconds: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            queue_late_minutes: 60,
            complaint_percent: 0.3,
            check_seconds: 30,
        }
    }
}

/// `[bounces]`: what bounces and complaints do, and how long their reports are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BouncesConfig {
    /// Soft bounces (a full mailbox, a server that is down) on this many different emails…
    pub soft_limit: u32,
    /// …within this many days suppress the address, as one hard bounce does.
    pub soft_days: u32,
    /// Days the raw text of a report is kept (`sangha bounces show`); its parsed fields stay.
    pub keep_days: u32,
    /// The mailbox the return path delivers to, read over IMAP; off while its host is empty.
    pub imap: ImapConfig,
}

/// `[bounces.imap]`: the bounce mailbox, polled by `serve` and by `sangha bounces poll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapConfig {
    /// The IMAP server; empty turns the poller off.
    pub host: String,
    pub port: u16,
    /// `tls` (993), `starttls` (143) or `none` (a server on this machine only).
    pub tls: TlsMode,
    pub user: String,
    pub password: Secret,
    /// The folder reports arrive in.
    pub folder: String,
    /// Where a message goes once it is recorded (created when missing).
    pub processed_folder: String,
    /// Seconds between two polls.
    pub poll_seconds: u64,
}

impl Default for ImapConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 993,
            tls: TlsMode::Tls,
            user: String::new(),
            password: Secret::default(),
            folder: "INBOX".to_owned(),
            processed_folder: "Processed".to_owned(),
            poll_seconds: 60,
        }
    }
}

impl ImapConfig {
    /// Whether a mailbox is configured.
    pub fn enabled(&self) -> bool {
        !self.host.trim().is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let (_, loopback) = host_and_loopback(&self.host);
        if self.tls == TlsMode::None && !loopback {
            return Err(invalid(
                "bounces.imap.tls",
                "\"none\" is only for a server on this machine (localhost, 127.0.0.1, ::1): \
                 set \"tls\" (port 993) or \"starttls\" (port 143)",
            ));
        }
        if self.user.is_empty() {
            return Err(invalid(
                "bounces.imap.user",
                "must be set with bounces.imap.host",
            ));
        }
        if self.password.is_empty() {
            return Err(invalid(
                "bounces.imap.password",
                "is missing: set it in the environment as SANGHA__BOUNCES__IMAP__PASSWORD",
            ));
        }
        if self.folder.trim().is_empty() || self.processed_folder.trim().is_empty() {
            return Err(invalid(
                "bounces.imap.folder",
                "folder and processed_folder must be set",
            ));
        }
        if self.folder == self.processed_folder {
            return Err(invalid(
                "bounces.imap.processed_folder",
                "must differ from bounces.imap.folder",
            ));
        }
        if self.poll_seconds == 0 {
            return Err(invalid("bounces.imap.poll_seconds", "must be at least 1"));
        }
        Ok(())
    }
}

impl Default for BouncesConfig {
    fn default() -> Self {
        Self {
            soft_limit: 3,
            soft_days: 30,
            keep_days: 30,
            imap: ImapConfig::default(),
        }
    }
}

/// `[[offerings]]`: one newsletter or course people can sign up for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferingConfig {
    /// The offering's identifier in URLs, forms and the command line.
    #[serde(with = "text")]
    pub slug: Slug,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: OfferingKind,
    /// Public offerings are listed on the signup page; others only by direct link or import.
    #[serde(default = "yes")]
    pub public: bool,
    /// Courses only: the folder of lesson files (Markdown with `day: N` in the front matter),
    /// relative to the config file's folder unless absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lessons: Option<PathBuf>,
    /// Courses only: the time of day ("HH:MM") lessons arrive in each person's zone
    /// (default 07:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_time: Option<TimeOfDay>,
    /// Courses only: the weekdays lessons may arrive on ("mon" … "sun"); a lesson that falls
    /// on another day comes on the next allowed one. Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<Weekday>,
    /// Newsletters only: its past sends are public at `/archive/{slug}`, with an Atom feed,
    /// and each email links to its web copy (sends scheduled `--private` excepted).
    #[serde(default)]
    pub archive: bool,
}

/// The time of day course lessons arrive when `local_time` is not set.
pub const DEFAULT_LESSON_TIME: jiff::civil::Time = jiff::civil::Time::constant(7, 0, 0, 0);

impl Config {
    /// The slugs of the offerings with a public archive (`archive = true`).
    pub fn archived_offerings(&self) -> Vec<String> {
        self.offerings
            .iter()
            .filter(|o| o.archive)
            .map(|o| o.slug.to_string())
            .collect()
    }
}

impl OfferingConfig {
    /// The time of day the course's lessons arrive (`local_time`, else 07:00).
    pub fn lesson_time(&self) -> jiff::civil::Time {
        self.local_time.map_or(DEFAULT_LESSON_TIME, TimeOfDay::time)
    }

    /// The weekdays the course's lessons may arrive on; empty means every day.
    pub fn lesson_weekdays(&self) -> Vec<jiff::civil::Weekday> {
        self.weekdays.iter().map(|day| day.weekday()).collect()
    }
}

/// Serde for a configuration value kept as its parsed type and written as its text.
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the value as its text.
    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    /// Reads the value from its text.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Reads a text into `T`, answering a refusal with `hint`.
fn parse_text<'de, T: std::str::FromStr, D: serde::Deserializer<'de>>(
    d: D,
    hint: &str,
) -> Result<T, D::Error> {
    String::deserialize(d)?
        .trim()
        .parse()
        .map_err(|_| serde::de::Error::custom(hint))
}

fn bind_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_text(d, "must be an address like 127.0.0.1:3000")
}

/// An address like `bind_address`, or empty for none.
fn optional_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom("must be an address like 127.0.0.1:9464, or empty for none")
    })
}

fn serialize_optional_bind<S: serde::Serializer>(
    value: &Option<SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.map(|a| a.to_string()).unwrap_or_default())
}

fn serialize_return_path<S: serde::Serializer>(
    value: &Option<lettre::Address>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_ref().map_or("", |a| a.as_ref()))
}

/// `mail.return_path`: an address, or empty for none. Its local part leaves room for the tag.
fn return_path<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<lettre::Address>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let address: lettre::Address = text.parse().map_err(|_| {
        serde::de::Error::custom("must be an address like bounces@example.com, or empty")
    })?;
    let room = 64 - 1 - crate::domain::BounceTag::MAX_LEN;
    if address.user().len() > room || address.user().contains('+') {
        return Err(serde::de::Error::custom(format!(
            "its local part (before the @) must be at most {room} characters and without `+`, \
             to leave room for the `+tag` of each delivery"
        )));
    }
    Ok(Some(address))
}

fn serialize_optional_address<S: serde::Serializer>(
    value: &Option<lettre::Address>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_ref().map_or("", |a| a.as_ref()))
}

/// An address like `owner@example.com`, or empty for none.
fn optional_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<lettre::Address>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom("must be an address like owner@example.com, or empty")
    })
}

fn from_mailbox<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mailbox, D::Error> {
    parse_text(d, "must be an address like `Name <hello@example.com>`")
}

/// `tokens.key`: base64 of at least 32 bytes; empty means none configured.
fn token_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TokenKey>, D::Error> {
    let text = Secret::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    TokenKey::from_base64(text.expose())
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `tokens.previous_keys`: each base64 of at least 32 bytes.
fn token_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TokenKey>, D::Error> {
    /// One key of the list, so that an error names its index.
    struct Key(TokenKey);
    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let text = Secret::deserialize(d)?;
            TokenKey::from_base64(text.expose())
                .map(Key)
                .map_err(serde::de::Error::custom)
        }
    }
    Ok(Vec::<Key>::deserialize(d)?
        .into_iter()
        .map(|k| k.0)
        .collect())
}

/// Writes a key (or each key of a list) as `[redacted]`.
fn redacted<T: RedactedKeys, S: serde::Serializer>(keys: &T, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    match keys.count() {
        None => s.serialize_str("[redacted]"),
        Some(n) => {
            let mut seq = s.serialize_seq(Some(n))?;
            for _ in 0..n {
                seq.serialize_element("[redacted]")?;
            }
            seq.end()
        }
    }
}

/// A key or a list of keys, printed without their value.
trait RedactedKeys {
    /// `None` for one key, the length for a list.
    fn count(&self) -> Option<usize>;
}

impl RedactedKeys for Option<TokenKey> {
    fn count(&self) -> Option<usize> {
        None
    }
}

impl RedactedKeys for Vec<TokenKey> {
    fn count(&self) -> Option<usize> {
        Some(self.len())
    }
}

fn yes() -> bool {
    true
}

/// A string that never shows itself in `Debug`, logs or `config check`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is handed to what needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"[redacted]\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

/// Where the configuration went wrong, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration error: {0}")]
    Parse(String),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            site: SiteConfig {
                name: "Sangha".into(),
                timezone: "UTC".parse().expect("a known zone"),
                owner_email: None,
            },
            server: ServerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
                base_url: "http://localhost:3000".into(),
                trusted_proxies: Vec::new(),
                cors_origins: Vec::new(),
                header_read_timeout_seconds: 10,
                idle_timeout_seconds: 60,
            },
            database: DatabaseConfig {
                url: "sqlite://data/sangha.db".into(),
                max_connections: 8,
                connect_timeout_seconds: 30,
            },
            mail: MailConfig {
                transport: TransportKind::File,
                from: "Sangha <hello@example.com>"
                    .parse()
                    .expect("a valid address"),
                message_id_domain: String::new(),
                return_path: None,
                outbox_dir: String::new(),
                unsubscribe_mailto: String::new(),
            },
            smtp: SmtpConfig {
                host: "localhost".into(),
                port: 587,
                tls: TlsMode::Starttls,
                username: String::new(),
                password: Secret::default(),
                pool_size: 8,
                rate_per_second: 0,
                timeout_seconds: 30,
                trust: TrustStore::Builtin,
                ca_file: None,
                certificate_sha256: None,
                danger_accept_invalid_certs: false,
            },
            tokens: TokenConfig {
                key: None,
                previous_keys: Vec::new(),
                confirm_ttl_hours: 7 * 24,
            },
            signup: SignupConfig {
                consent_text: "I would like to receive the offerings I chose by email. \
                               I can leave at any time with one click."
                    .into(),
                confirmation_cooldown_minutes: 60,
                confirmations_per_domain_per_hour: 60,
                confirmation_reminder_after_hours: 48,
                unconfirmed_delete_after_days: 30,
                signups_per_domain_per_network_per_hour: 10,
                rate_limit_per_minute: 10,
                rate_limit_burst: 5,
                honeypot_field: "website".into(),
            },
            worker: WorkerConfig {
                poll_interval_ms: 1000,
                batch_size: 50,
                lease_seconds: 60,
                concurrency: 8,
                max_attempts: 8,
                pause_after_failures: 20,
                pause_failure_percent: 10,
                fanout_batch_size: 5000,
                grace_minutes: 720,
                recurring_warn_below: 3,
                shutdown_grace_seconds: 20,
            },
            dns: DnsConfig::default(),
            bounces: BouncesConfig::default(),
            alerts: AlertsConfig::default(),
            webhooks: WebhooksConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            dkim: DkimConfig::default(),
            offerings: Vec::new(),
            config_dir: None,
        }
    }
}

/// The default config file name, looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

impl Config {
    /// Loads defaults, then the file (if `path` is given it must exist; otherwise `config.toml`
    /// is used when present), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::Read {
                        path: p.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
                    });
                }
                Some(p.to_owned())
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &file {
            let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("SANGHA__"))
            .collect();
        figment = figment.merge(env_provider(env));
        let mut config: Config = figment.extract().map_err(describe_figment_error)?;
        config.config_dir = file.map(|f| {
            f.parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."))
        });
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that serde cannot: addresses, URLs, offerings, limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.site.name.trim().is_empty() {
            return Err(invalid("site.name", "must not be empty"));
        }
        let base = self.server.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() < 10 {
            return Err(invalid(
                "server.base_url",
                "must be an absolute http:// or https:// URL",
            ));
        }
        if let Some(metrics) = self.metrics.bind
            && metrics.port() != 0
            && metrics.port() == self.server.bind.port()
        {
            return Err(invalid(
                "metrics.bind",
                "must be another port than server.bind: the metrics are not for the public site",
            ));
        }
        let percent = self.alerts.complaint_percent;
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(invalid(
                "alerts.complaint_percent",
                "must be a percentage above 0 and at most 100, such as 0.3",
            ));
        }
        if self.alerts.check_seconds == 0 {
            return Err(invalid("alerts.check_seconds", "must be at least 1"));
        }
        for origin in &self.server.cors_origins {
            if origin.parse::<axum::http::HeaderValue>().is_err() || !origin.contains("://") {
                return Err(invalid(
                    "server.cors_origins",
                    format!("`{origin}` is not an origin like https://example.org"),
                ));
            }
        }
        for (key, seconds) in [
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
            ),
            (
                "server.idle_timeout_seconds",
                self.server.idle_timeout_seconds,
            ),
        ] {
            if !(1..=86_400).contains(&seconds) {
                return Err(invalid(key, "must be between 1 and 86400 seconds"));
            }
        }
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        let domain = self.message_id_domain();
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(invalid(
                "mail.message_id_domain",
                "must be a domain name like example.com",
            ));
        }
        if self.mail.transport == TransportKind::Smtp {
            if self.smtp.host.trim().is_empty() {
                return Err(invalid("smtp.host", "must be set for the smtp transport"));
            }
            if !self.smtp.username.is_empty() && self.smtp.password.is_empty() {
                return Err(invalid(
                    "smtp.password",
                    "is missing: smtp.username is set, so set the password \
                     (better in the environment as SANGHA__SMTP__PASSWORD)",
                ));
            }
        }
        if let Some(path) = self.smtp_ca_file() {
            read_ca_file(&path).map_err(|e| invalid("smtp.ca_file", e))?;
        }
        self.validate_dkim()?;
        if self.smtp.pool_size == 0 {
            return Err(invalid("smtp.pool_size", "must be at least 1"));
        }
        if self.tokens.confirm_ttl_hours == 0 {
            return Err(invalid("tokens.confirm_ttl_hours", "must be at least 1"));
        }
        let (remind, delete) = (
            self.signup.confirmation_reminder_after_hours,
            self.signup.unconfirmed_delete_after_days,
        );
        if remind > 0 && delete > 0 && u64::from(delete) * 24 <= u64::from(remind) {
            return Err(invalid(
                "signup.unconfirmed_delete_after_days",
                format!(
                    "must be later than the reminder (signup.confirmation_reminder_after_hours \
                     = {remind}), or 0"
                ),
            ));
        }
        if self.signup.honeypot_field.is_empty()
            || ["email", "name", "offerings", "timezone"]
                .contains(&self.signup.honeypot_field.as_str())
        {
            return Err(invalid(
                "signup.honeypot_field",
                "must be a field name not used by the form",
            ));
        }
        if self.worker.batch_size == 0 || self.worker.concurrency == 0 {
            return Err(invalid(
                "worker.batch_size",
                "batch_size and concurrency must be at least 1",
            ));
        }
        if self.worker.lease_seconds == 0 {
            return Err(invalid("worker.lease_seconds", "must be at least 1"));
        }
        if self.worker.batch_size > 10_000 {
            // Claimed rows are read back with one bound parameter each.
            return Err(invalid("worker.batch_size", "must be at most 10000"));
        }
        if self.worker.fanout_batch_size == 0 {
            return Err(invalid("worker.fanout_batch_size", "must be at least 1"));
        }
        if self.bounces.soft_limit == 0 {
            return Err(invalid("bounces.soft_limit", "must be at least 1"));
        }
        if self.bounces.soft_days == 0 {
            return Err(invalid("bounces.soft_days", "must be at least 1"));
        }
        self.webhooks.validate()?;
        self.bounces.imap.validate()?;
        if self.worker.pause_failure_percent > 100 {
            return Err(invalid(
                "worker.pause_failure_percent",
                "must be at most 100",
            ));
        }
        if !self.mail.unsubscribe_mailto.is_empty()
            && self
                .mail
                .unsubscribe_mailto
                .parse::<lettre::Address>()
                .is_err()
        {
            return Err(invalid(
                "mail.unsubscribe_mailto",
                "must be an email address or empty",
            ));
        }
        if self.worker.max_attempts == 0 {
            return Err(invalid("worker.max_attempts", "must be at least 1"));
        }
        let mut seen = HashSet::new();
        for (i, o) in self.offerings.iter().enumerate() {
            let key = format!("offerings[{i}].slug");
            if !seen.insert(&o.slug) {
                return Err(invalid(&key, format!("`{}` is declared twice", o.slug)));
            }
            if o.name.trim().is_empty() {
                return Err(invalid(
                    &format!("offerings[{i}].name"),
                    "must not be empty",
                ));
            }
            self.validate_course(i, o)?;
        }
        Ok(())
    }

    /// DKIM names are DNS labels: selectors and the domain of letters, digits, `-` and `.`,
    /// each selector once. The key files are read later, once, when the transport is built.
    fn validate_dkim(&self) -> Result<(), ConfigError> {
        let dns_name = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.ends_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if !self.dkim.domain.is_empty() && !dns_name(&self.dkim.domain) {
            return Err(invalid(
                "dkim.domain",
                "must be a domain name like example.com, or empty for the domain of mail.from",
            ));
        }
        let mut seen = HashSet::new();
        for (i, key) in self.dkim.keys.iter().enumerate() {
            if !dns_name(&key.selector) {
                return Err(invalid(
                    &format!("dkim.keys[{i}].selector"),
                    "must be letters, digits, `-` or `.`, like \"sangha2026\"",
                ));
            }
            if !seen.insert(&key.selector) {
                return Err(invalid(
                    &format!("dkim.keys[{i}].selector"),
                    format!("`{}` is listed twice", key.selector),
                ));
            }
            if key.file.as_os_str().is_empty() {
                return Err(invalid(&format!("dkim.keys[{i}].file"), "must be set"));
            }
        }
        Ok(())
    }

    /// A course needs a folder of lessons, a time of day and valid weekdays; a newsletter
    /// takes none of them.
    fn validate_course(&self, i: usize, o: &OfferingConfig) -> Result<(), ConfigError> {
        let key = |name: &str| format!("offerings[{i}].{name}");
        if o.kind == OfferingKind::Course && o.archive {
            return Err(invalid(
                &key("archive"),
                "a course cannot be archived: its lessons are written for the people on it, \
                 one day at a time; only newsletters have a public archive",
            ));
        }
        if o.kind != OfferingKind::Course {
            for (name, set) in [
                ("lessons", o.lessons.is_some()),
                ("local_time", o.local_time.is_some()),
                ("weekdays", !o.weekdays.is_empty()),
            ] {
                if set {
                    return Err(invalid(&key(name), "is only for kind = \"course\""));
                }
            }
            return Ok(());
        }
        let Some(dir) = self.lessons_dir(o) else {
            return Err(invalid(
                &key("lessons"),
                format!(
                    "a course needs the folder of its lessons, e.g. lessons = \"courses/{}\"",
                    o.slug
                ),
            ));
        };
        if !dir.is_dir() {
            return Err(invalid(
                &key("lessons"),
                format!("the folder {} does not exist", dir.display()),
            ));
        }
        Ok(())
    }

    /// The lessons folder of a course: `lessons` as given when absolute, else next to the
    /// config file (or in the working directory without one).
    pub fn lessons_dir(&self, offering: &OfferingConfig) -> Option<PathBuf> {
        let dir = offering.lessons.as_ref()?;
        Some(match &self.config_dir {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir.clone(),
        })
    }

    /// `smtp.ca_file` as given when absolute, else next to the config file (or in the working
    /// directory without one).
    pub fn smtp_ca_file(&self) -> Option<PathBuf> {
        let file = self.smtp.ca_file.as_ref()?;
        Some(match &self.config_dir {
            Some(base) if file.is_relative() => base.join(file),
            _ => file.clone(),
        })
    }

    /// The right-hand side of Message-IDs: `mail.message_id_domain`, else the domain of
    /// `mail.from`.
    pub fn message_id_domain(&self) -> String {
        if self.mail.message_id_domain.is_empty() {
            self.mail.from.email.domain().to_ascii_lowercase()
        } else {
            self.mail.message_id_domain.to_ascii_lowercase()
        }
    }

    /// The envelope sender (Return-Path) of messages that name no delivery, and the base of
    /// the VERP addresses of those that do: `mail.return_path`, else the From address.
    pub fn envelope_sender(&self) -> lettre::Address {
        self.mail
            .return_path
            .clone()
            .unwrap_or_else(|| self.mail.from.email.clone())
    }

    /// Settings that work but are likely mistakes, each with its fix: the SMTP ones (see
    /// [`SmtpConfig::warnings`]) and the [`Config::alignment_warnings`]. `config check` and
    /// `doctor` print them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.mail.transport == TransportKind::Smtp {
            warnings.extend(self.smtp.warnings());
        }
        warnings.extend(self.alignment_warnings());
        warnings
    }

    /// The DKIM, envelope and Message-ID domains that are neither the From domain nor under
    /// it (nor above it), each with its fix; by default all are the From domain.
    pub fn alignment_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let from = self.mail.from.email.domain().to_ascii_lowercase();
        let aligned = |domain: &str| {
            domain == from
                || domain.ends_with(&format!(".{from}"))
                || from.ends_with(&format!(".{domain}"))
        };
        let dkim = self.dkim_domain();
        if !self.dkim.keys.is_empty() && !aligned(&dkim) {
            warnings.push(format!(
                "dkim.domain = \"{dkim}\" is not the domain of mail.from ({from}) nor one \
                 under it: DMARC counts a DKIM signature only when its domain aligns with the \
                 From domain, so Gmail and Yahoo treat the mail as unsigned; leave dkim.domain \
                 empty to sign as {from}"
            ));
        }
        let envelope = self.envelope_sender().domain().to_ascii_lowercase();
        if !aligned(&envelope) {
            warnings.push(format!(
                "mail.return_path is at {envelope}, not at the domain of mail.from ({from}) \
                 nor one under it: SPF then passes for {envelope} only, and DMARC does not \
                 count it; use an address like bounces@{from}"
            ));
        }
        let message_id = self.message_id_domain();
        if !aligned(&message_id) {
            warnings.push(format!(
                "mail.message_id_domain = \"{message_id}\" is not the domain of mail.from \
                 ({from}): Message-IDs of another domain than the sender's look forged to spam \
                 filters; leave it empty to use {from}"
            ));
        }
        warnings
    }

    /// The `d=` domain of DKIM signatures: `dkim.domain`, else the domain of `mail.from`.
    pub fn dkim_domain(&self) -> String {
        if self.dkim.domain.is_empty() {
            self.mail.from.email.domain().to_ascii_lowercase()
        } else {
            self.dkim.domain.to_ascii_lowercase()
        }
    }

    /// A DKIM key file as given when absolute, else inside `data_dir` (where `sangha dkim
    /// keygen` writes it).
    pub fn dkim_key_file(&self, key: &DkimKeyConfig) -> PathBuf {
        if key.file.is_relative() {
            self.data_dir.join(&key.file)
        } else {
            key.file.clone()
        }
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.server.base_url.trim_end_matches('/')
    }

    /// Why `serve` should not start as configured without `--insecure`: the server listens
    /// beyond this machine (`server.bind` not loopback) while `server.base_url` is http, so
    /// every link in every email (confirm, unsubscribe, preferences) would cross the network
    /// in clear text. `None` when the bind is loopback (a proxy on this machine adds TLS) or
    /// the base URL is https.
    pub fn insecure_exposure(&self) -> Option<String> {
        let bind = self.server.bind;
        let http = self.server.base_url.starts_with("http://");
        if bind.ip().is_loopback() || !http {
            return None;
        }
        Some(format!(
            "server.bind = \"{bind}\" answers beyond this machine while server.base_url = \"{}\" \
             is http: the links in every email (confirm, unsubscribe, preferences) would travel \
             in clear text. Put a TLS proxy in front (see deploy/ and README) and set \
             server.base_url to its https address, or bind to 127.0.0.1 behind the proxy; \
             `sangha serve --insecure` starts anyway",
            self.base_url()
        ))
    }

    /// Where the file transport writes: `mail.outbox_dir`, else `data_dir/outbox`.
    pub fn outbox_dir(&self) -> PathBuf {
        if self.mail.outbox_dir.is_empty() {
            self.data_dir.join("outbox")
        } else {
            PathBuf::from(&self.mail.outbox_dir)
        }
    }

    /// The folder whose `templates/` overrides the embedded templates, if any.
    pub fn templates_dir(&self) -> Option<PathBuf> {
        self.config_dir
            .as_ref()
            .map(|d| d.join("templates"))
            .filter(|d| d.is_dir())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// The DER certificates of a PEM file (`smtp.ca_file`); an error names the file and says
/// what is wrong with it: missing, unreadable, not PEM, or without any certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .map(|cert| cert.map(|cert| cert.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM file of certificates: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// Keys whose values are secret (or contain one): never shown in an error message.
const SECRET_KEYS: [&str; 7] = [
    "smtp.password",
    "bounces.imap.password",
    "tokens.key",
    "tokens.previous_keys",
    "database.url",
    "webhooks.postmark.password",
    "webhooks.mailgun.signing_key",
];

/// The secret keys that are plain strings: taken from the environment as written.
const SECRET_STRINGS: [&str; 6] = [
    "smtp.password",
    "bounces.imap.password",
    "tokens.key",
    "database.url",
    "webhooks.postmark.password",
    "webhooks.mailgun.signing_key",
];

fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|secret| {
        key.strip_prefix(secret)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// Maps `SANGHA__SMTP__HOST` to `smtp.host` and `SANGHA__DATA_DIR` to `data_dir`.
fn env_provider(vars: Vec<(String, String)>) -> Serialized<figment::value::Dict> {
    use figment::value::{Dict, Value};
    let mut root = Dict::new();
    for (key, raw) in vars {
        let path: Vec<String> = key["SANGHA__".len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        // A secret is taken as it is written: a password of digits stays a string (and is
        // never echoed back in a type error).
        let value = if SECRET_STRINGS.contains(&path.join(".").as_str()) {
            Value::from(raw)
        } else {
            parse_env_value(&raw)
        };
        let mut dict = &mut root;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                dict.insert(part.clone(), value.clone());
            } else {
                let entry = dict
                    .entry(part.clone())
                    .or_insert_with(|| Value::from(Dict::new()));
                if !matches!(entry, Value::Dict(..)) {
                    *entry = Value::from(Dict::new());
                }
                let Value::Dict(_, inner) = entry else {
                    unreachable!("just made a dict")
                };
                dict = inner;
            }
        }
    }
    Serialized::defaults(root)
}

/// Environment values are TOML values when they parse as one (`8`, `true`, `["a"]`),
/// otherwise plain strings.
fn parse_env_value(raw: &str) -> figment::value::Value {
    use figment::value::Value;
    let looks_structured = raw.starts_with('[') || raw.starts_with('{');
    let parsed: Option<Value> =
        if looks_structured || raw.parse::<f64>().is_ok() || raw == "true" || raw == "false" {
            toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|t| t.get("v").cloned())
                .and_then(|v| Value::serialize(v).ok())
        } else {
            None
        };
    parsed.unwrap_or_else(|| Value::from(raw.to_owned()))
}

/// A key path as the owner writes it: `offerings[0].local_time`.
fn key_of(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

fn describe_figment_error(err: figment::Error) -> ConfigError {
    let mut messages = Vec::new();
    for e in err {
        let key = key_of(&e.path);
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                let full = if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                };
                format!("unknown key `{full}`")
            }
            // Serde's messages quote the value found ("found signed int `1234`"): not for
            // a secret.
            figment::error::Kind::InvalidType(_, expected) if is_secret_key(&key) => {
                format!("key `{key}`: expected {expected} (the value is secret, so not shown)")
            }
            // Our own parsers' messages (a key too short, not base64) never quote the value.
            figment::error::Kind::Message(message) if is_secret_key(&key) => {
                format!("key `{key}`: {message}")
            }
            _ if is_secret_key(&key) => {
                format!("key `{key}`: not a valid value (the value is secret, so not shown)")
            }
            other => {
                if key.is_empty() {
                    other.to_string()
                } else {
                    format!("key `{key}`: {other}")
                }
            }
        };
        let source = e
            .metadata
            .as_ref()
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        messages.push(format!("{what}{source}"));
    }
    ConfigError::Parse(messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile_dir();
        let path = dir.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(Some(&path), env)
    }

    #[test]
    fn only_a_public_bind_with_an_http_base_url_is_an_insecure_exposure() {
        let exposed = |bind: &str, base: &str| {
            load(
                &format!("[server]\nbind = \"{bind}\"\nbase_url = \"{base}\"\n"),
                &[],
            )
            .unwrap()
            .insecure_exposure()
        };
        let why = exposed("0.0.0.0:8080", "http://news.example.org").expect("exposed");
        assert!(
            why.contains("0.0.0.0:8080") && why.contains("--insecure"),
            "{why}"
        );
        assert!(exposed("192.0.2.7:80", "http://news.example.org").is_some());
        assert!(exposed("[::]:8080", "http://news.example.org").is_some());
        assert_eq!(exposed("0.0.0.0:8080", "https://news.example.org"), None);
        assert_eq!(exposed("127.0.0.1:3000", "http://localhost:3000"), None);
        assert_eq!(exposed("[::1]:3000", "http://localhost:3000"), None);
    }

    #[test]
    fn deleting_unconfirmed_people_before_their_reminder_is_refused() {
        let signup = |remind: &str, delete: &str| {
            load(
                &format!(
                    "[signup]\nconfirmation_reminder_after_hours = {remind}\n\
                     unconfirmed_delete_after_days = {delete}\n"
                ),
                &[],
            )
        };
        let err = signup("72", "3").unwrap_err().to_string();
        assert!(
            err.contains("signup.unconfirmed_delete_after_days"),
            "{err}"
        );
        assert!(err.contains("72"), "{err}");
        let config = signup("72", "4").unwrap();
        assert_eq!(config.signup.confirmation_reminder_after_hours, 72);
        assert!(signup("0", "1").is_ok(), "no reminder");
        assert!(signup("48", "0").is_ok(), "nobody deleted");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sangha-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_committed_config_toml_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::load_with_env(Some(&path), Vec::new()).expect("config.toml loads");
        assert_eq!(config.mail.transport, TransportKind::File);
        assert!(config.database.url.starts_with("sqlite:"));
        let slugs: Vec<&str> = config.offerings.iter().map(|o| o.slug.as_str()).collect();
        for slug in [
            "guided-meditations",
            "conscious-awakening",
            "morning-meditation",
            "orgasmic-queen",
        ] {
            assert!(slugs.contains(&slug), "{slug} missing from {slugs:?}");
        }
    }

    #[test]
    fn environment_overrides_the_file_which_overrides_defaults() {
        let config = load(
            "[smtp]\nhost = \"file-host\"\nport = 2525\n",
            &[
                ("SANGHA__SMTP__HOST", "env-host"),
                ("SANGHA__DATA_DIR", "/tmp/x"),
            ],
        )
        .unwrap();
        assert_eq!(config.smtp.host, "env-host");
        assert_eq!(config.smtp.port, 2525);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.smtp.pool_size, 8, "default kept");
    }

    #[test]
    fn environment_numbers_and_lists_are_typed() {
        let config = load(
            "",
            &[
                ("SANGHA__SMTP__PORT", "2526"),
                ("SANGHA__SERVER__CORS_ORIGINS", "[\"https://a.example\"]"),
            ],
        )
        .unwrap();
        assert_eq!(config.smtp.port, 2526);
        assert_eq!(config.server.cors_origins, vec!["https://a.example"]);
    }

    #[test]
    fn the_owner_address_is_optional_and_alert_thresholds_are_checked() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.site.owner_email, None);
        assert_eq!(config.alerts.queue_late_minutes, 60);
        let config = load("[site]\nowner_email = \"me@example.org\"\n", &[]).unwrap();
        assert_eq!(
            config.site.owner_email.map(|a| a.to_string()).as_deref(),
            Some("me@example.org")
        );
        let err = load("[site]\nowner_email = \"not an address\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("owner_email"), "{err}");
        let whole = load("[alerts]\ncomplaint_percent = 1\n", &[]).unwrap();
        assert!((whole.alerts.complaint_percent - 1.0).abs() < f64::EPSILON);
        for bad in ["0", "-1", "101"] {
            let err = load(&format!("[alerts]\ncomplaint_percent = {bad}\n"), &[]).unwrap_err();
            assert!(
                err.to_string().contains("alerts.complaint_percent"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_metrics_address_is_off_by_default_and_never_the_sites_port() {
        assert_eq!(load("", &[]).unwrap().metrics.bind, None);
        let on = load("", &[("SANGHA__METRICS__BIND", "127.0.0.1:9464")]).unwrap();
        assert_eq!(
            on.metrics.bind,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let err = load("[metrics]\nbind = \"0.0.0.0:3000\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.bind"), "{err}");
        let err = load("[metrics]\nbind = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.bind"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let err = load("[smtp]\nhots = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("smtp.hots"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_environment_is_named() {
        let err = load("", &[("SANGHA__SMTP__HOTS", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.hots"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let err = load("[smtp]\ntls = \"maybe\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.tls"), "{err}");
        let err = load("[server]\nbind = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.bind"), "{err}");
    }

    #[test]
    fn a_missing_or_invalid_ca_file_stops_start_naming_the_key_and_the_file() {
        let err = load("[smtp]\nca_file = \"no-such-ca.pem\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.ca_file"), "{err}");
        assert!(err.contains("no-such-ca.pem"), "{err}");
        let dir = tempfile_dir();
        let not_pem = dir.join("not-a-ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let err = load(&format!("[smtp]\nca_file = {:?}\n", not_pem), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.ca_file"), "{err}");
        assert!(
            err.contains("not-a-ca.pem") && err.contains("no certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_fingerprint_is_read_with_or_without_colons() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let a = CertificateSha256::parse(&hex).unwrap();
        assert_eq!(a, CertificateSha256::parse(&colons).unwrap());
        assert_eq!(
            a,
            CertificateSha256::parse(&format!("sha256 Fingerprint={colons}")).unwrap()
        );
        assert_eq!(a.to_string(), colons);
        let err = load("[smtp]\ncertificate_sha256 = \"abc\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.certificate_sha256"), "{err}");
    }

    #[test]
    fn a_missing_smtp_password_stops_start() {
        let err = load(
            "[mail]\ntransport = \"smtp\"\n[smtp]\nusername = \"me\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("smtp.password"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_in_the_printed_config() {
        let config = load(
            "",
            &[
                ("SANGHA__SMTP__PASSWORD", "hunter2-secret"),
                ("SANGHA__DATABASE__URL", "postgres://u:dbpass@localhost/x"),
            ],
        )
        .unwrap();
        let printed = config.to_redacted_toml();
        let debug = format!("{config:?}");
        for text in [&printed, &debug] {
            assert!(!text.contains("hunter2-secret"), "{text}");
            assert!(!text.contains("dbpass"), "{text}");
        }
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn every_password_form_of_a_database_url_is_redacted() {
        for (url, shown) in [
            (
                "postgres://u:dbpass@localhost/x",
                "postgres://u:[redacted]@localhost/x",
            ),
            (
                "postgres://u@localhost/x?password=dbpass&sslmode=require",
                "postgres://u@localhost/x?password=[redacted]&sslmode=require",
            ),
            (
                "postgresql://localhost:5433/x?sslpassword=dbpass&Password=dbpass",
                "postgresql://localhost:5433/x?sslpassword=[redacted]&Password=[redacted]",
            ),
            (
                "postgres://u:p%40ss@h/x?pass%77ord=dbpass",
                "postgres://u:[redacted]@h/x?pass%77ord=[redacted]",
            ),
            ("postgres://u:dbp@ss@h/x", "postgres://u:[redacted]@h/x"),
            (
                "postgres://u:dbpass@h:port/x",
                "postgres:[not shown: not a URL that can be read]",
            ),
            ("sqlite://data/sangha.db", "sqlite://data/sangha.db"),
            (
                "sqlite:data/sangha.db?mode=rwc",
                "sqlite:data/sangha.db?mode=rwc",
            ),
            (
                "postgres://u@h/x?sslmode=require",
                "postgres://u@h/x?sslmode=require",
            ),
        ] {
            assert_eq!(redact_url_password(url), shown, "{url}");
        }
    }

    #[test]
    fn previous_token_keys_are_checked_and_never_printed() {
        let key = "dGVzdC10b2tlbi1rZXktdGhhdC1pcy1sb25nLWVub3VnaC0zMi1ieXRlcw==";
        let config = load(
            "",
            &[("SANGHA__TOKENS__PREVIOUS_KEYS", &format!("[\"{key}\"]"))],
        )
        .unwrap();
        assert_eq!(config.tokens.previous_keys.len(), 1);
        for text in [config.to_redacted_toml(), format!("{config:?}")] {
            assert!(!text.contains(key), "{text}");
            assert!(!text.contains(&key[..16]), "{text}");
        }
        let err = load("[tokens]\nprevious_keys = [\"c2hvcnQ=\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokens.previous_keys[0]"), "{err}");
    }

    #[test]
    fn a_secret_of_digits_is_a_string_and_a_bad_one_is_never_echoed() {
        let config = load("", &[("SANGHA__SMTP__PASSWORD", "1234567890123")]).unwrap();
        assert_eq!(config.smtp.password.expose(), "1234567890123");
        let err = load("[smtp]\npassword = 98765432101\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.password"), "{err}");
        assert!(!err.contains("98765432101"), "{err}");
        let err = load("", &[("SANGHA__TOKENS__PREVIOUS_KEYS", "[12345678987]")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokens.previous_keys"), "{err}");
        assert!(!err.contains("12345678987"), "{err}");
    }

    #[test]
    fn values_are_parsed_once_into_their_types_and_printed_as_written() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("lessons")).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "[site]\ntimezone = \"Asia/Kathmandu\"\n\
             [server]\nbind = \"0.0.0.0:8080\"\n\
             [mail]\nfrom = \"Ananda <hello@shakti.example>\"\n\
             [[offerings]]\nslug = \"nine-months\"\nname = \"C\"\nkind = \"course\"\n\
             lessons = \"lessons\"\nlocal_time = \"06:05\"\nweekdays = [\"Mon\", \"friday\"]\n",
        )
        .unwrap();
        let config = Config::load_with_env(Some(&path), Vec::new()).unwrap();
        assert_eq!(config.site.timezone.as_str(), "Asia/Kathmandu");
        assert_eq!(config.server.bind, SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert_eq!(config.mail.from.email.to_string(), "hello@shakti.example");
        assert_eq!(config.offerings[0].slug.as_str(), "nine-months");
        assert_eq!(
            config.offerings[0].lesson_time(),
            jiff::civil::time(6, 5, 0, 0)
        );
        let printed = config.to_redacted_toml();
        for line in [
            "timezone = \"Asia/Kathmandu\"",
            "bind = \"0.0.0.0:8080\"",
            "from = \"Ananda <hello@shakti.example>\"",
            "local_time = \"06:05\"",
            "weekdays = [\n    \"mon\",\n    \"fri\",\n]",
        ] {
            assert!(printed.contains(line), "{line} in {printed}");
        }
    }

    #[test]
    fn the_dkim_envelope_and_message_id_domains_follow_from_and_a_misaligned_one_is_warned() {
        let config = load("[mail]\nfrom = \"Ananda <hello@shakti.example>\"\n", &[]).unwrap();
        assert_eq!(config.message_id_domain(), "shakti.example");
        assert_eq!(config.dkim_domain(), "shakti.example");
        assert_eq!(config.envelope_sender().to_string(), "hello@shakti.example");
        assert_eq!(config.warnings(), Vec::<String>::new());

        let aligned = load(
            "[mail]\nfrom = \"hello@shakti.example\"\nreturn_path = \"bounces@mail.shakti.example\"\n\
             message_id_domain = \"shakti.example\"\n\
             [dkim]\ndomain = \"SHAKTI.example\"\nkeys = [{ selector = \"s1\", file = \"k.pem\" }]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            aligned.envelope_sender().to_string(),
            "bounces@mail.shakti.example"
        );
        assert_eq!(aligned.alignment_warnings(), Vec::<String>::new());

        let apart = load(
            "[mail]\nfrom = \"hello@shakti.example\"\nreturn_path = \"bounces@relay.example\"\n\
             message_id_domain = \"example.com\"\n\
             [dkim]\ndomain = \"relay.example\"\nkeys = [{ selector = \"s1\", file = \"k.pem\" }]\n",
            &[],
        )
        .unwrap();
        let warnings = apart.warnings();
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("dkim.domain = \"relay.example\""),
            "{warnings:#?}"
        );
        assert!(
            warnings[1].starts_with("mail.return_path is at relay.example"),
            "{warnings:#?}"
        );
        assert!(
            warnings[2].starts_with("mail.message_id_domain = \"example.com\""),
            "{warnings:#?}"
        );
        assert!(
            warnings.iter().all(|w| w.contains("shakti.example")),
            "each names From"
        );
        // Without keys there is no signature to misalign.
        let unsigned = load(
            "[mail]\nfrom = \"hello@shakti.example\"\n[dkim]\ndomain = \"relay.example\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(unsigned.alignment_warnings(), Vec::<String>::new());
    }

    #[test]
    fn a_return_path_leaves_room_for_its_tag_and_a_bad_one_is_named() {
        let config = load("[mail]\nreturn_path = \" bounces@example.com \"\n", &[]).unwrap();
        assert_eq!(
            config
                .mail
                .return_path
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("bounces@example.com")
        );
        assert!(
            config
                .to_redacted_toml()
                .contains("return_path = \"bounces@example.com\"")
        );
        assert!(
            load("[mail]\nreturn_path = \"\"\n", &[])
                .unwrap()
                .mail
                .return_path
                .is_none()
        );
        for (bad, says) in [
            ("not an address", "must be an address"),
            ("bounces+x@example.com", "without `+`"),
            (
                &format!("{}@example.com", "b".repeat(24)),
                "at most 23 characters",
            ),
        ] {
            let err = load(&format!("[mail]\nreturn_path = \"{bad}\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("mail.return_path"), "{err}");
            assert!(err.contains(says), "{says} in {err}");
        }
        assert!(
            load(
                &format!("[mail]\nreturn_path = \"{}@example.com\"\n", "b".repeat(23)),
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn a_bad_token_key_is_named_with_its_reason_and_never_echoed() {
        let err = load("[tokens]\nkey = \"c2hvcnQ=\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokens.key"), "{err}");
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(!err.contains("c2hvcnQ"), "{err}");
        let err = load("", &[("SANGHA__TOKENS__KEY", "not base64 at all!")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be base64"), "{err}");
        assert!(!err.contains("not base64 at all"), "{err}");
        let config = load("[tokens]\nkey = \"\"\n", &[]).unwrap();
        assert!(config.tokens.key.is_none(), "empty means generated");
    }

    #[test]
    fn duplicate_offering_slugs_are_refused() {
        let err = load(
            "[[offerings]]\nslug = \"a\"\nname = \"A\"\nkind = \"newsletter\"\n\
             [[offerings]]\nslug = \"a\"\nname = \"B\"\nkind = \"course\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("offerings[1].slug"), "{err}");
    }

    #[test]
    fn a_course_cannot_have_an_archive_and_a_newsletter_can() {
        let err = load(
            "[[offerings]]\nslug = \"c\"\nname = \"C\"\nkind = \"course\"\n\
             lessons = \"courses/orgasmic-queen\"\narchive = true\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("offerings[0].archive"), "{err}");
        assert!(err.contains("a course cannot be archived"), "{err}");
        let config = load(
            "[[offerings]]\nslug = \"n\"\nname = \"N\"\nkind = \"newsletter\"\n\
             archive = true\n",
            &[],
        )
        .unwrap();
        assert!(config.offerings[0].archive);
    }

    #[test]
    fn a_course_needs_its_lessons_folder_a_time_and_real_weekdays() {
        let course = |extra: &str| {
            format!("[[offerings]]\nslug = \"c\"\nname = \"C\"\nkind = \"course\"\n{extra}")
        };
        let err = load(&course(""), &[]).unwrap_err().to_string();
        assert!(err.contains("offerings[0].lessons"), "{err}");
        let err = load(&course("lessons = \"nowhere\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("offerings[0].lessons") && err.contains("does not exist"),
            "{err}"
        );
        // Relative to the config file's folder.
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("lessons")).unwrap();
        let path = dir.join("config.toml");
        let write = |extra: &str| {
            std::fs::write(&path, course(&format!("lessons = \"lessons\"\n{extra}"))).unwrap();
            Config::load_with_env(Some(&path), Vec::new())
        };
        let config = write("").unwrap();
        assert_eq!(
            config.lessons_dir(&config.offerings[0]),
            Some(dir.join("lessons"))
        );
        let o = &config.offerings[0];
        assert_eq!(o.lesson_time(), jiff::civil::time(7, 0, 0, 0));
        assert!(o.lesson_weekdays().is_empty());
        let config = write("local_time = \"18:30\"\nweekdays = [\"mon\", \"Fri\"]\n").unwrap();
        let o = &config.offerings[0];
        assert_eq!(o.lesson_time(), jiff::civil::time(18, 30, 0, 0));
        assert_eq!(
            o.lesson_weekdays(),
            [jiff::civil::Weekday::Monday, jiff::civil::Weekday::Friday]
        );
        for (extra, key) in [
            ("local_time = \"7am\"\n", "local_time"),
            ("local_time = \"24:00\"\n", "local_time"),
            ("weekdays = [\"someday\"]\n", "weekdays"),
        ] {
            let err = write(extra).unwrap_err().to_string();
            assert!(
                err.contains(&format!("offerings[0].{key}")),
                "{extra}: {err}"
            );
        }
        let err = load(
            "[[offerings]]\nslug = \"n\"\nname = \"N\"\nkind = \"newsletter\"\n\
             weekdays = [\"mon\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("offerings[0].weekdays"), "{err}");
    }

    #[test]
    fn the_bounce_mailbox_takes_its_password_from_the_environment_and_never_shows_it() {
        let toml = "[bounces.imap]\nhost = \"imap.example.org\"\nuser = \"bounces\"\n";
        let err = load(toml, &[]).unwrap_err().to_string();
        assert!(err.contains("SANGHA__BOUNCES__IMAP__PASSWORD"), "{err}");
        let config = load(toml, &[("SANGHA__BOUNCES__IMAP__PASSWORD", "12345")]).unwrap();
        let imap = &config.bounces.imap;
        assert!(imap.enabled());
        assert_eq!((imap.port, imap.tls), (993, TlsMode::Tls));
        assert_eq!(
            (imap.folder.as_str(), imap.processed_folder.as_str()),
            ("INBOX", "Processed")
        );
        assert_eq!((imap.password.expose(), imap.poll_seconds), ("12345", 60));
        let printed = config.to_redacted_toml();
        let debug = format!("{config:?}");
        for text in [&printed, &debug] {
            assert!(!text.contains("12345"), "{text}");
        }
        assert!(!load("", &[]).unwrap().bounces.imap.enabled());
    }

    #[test]
    fn a_bounce_mailbox_in_clear_text_must_be_on_this_machine() {
        let env = [("SANGHA__BOUNCES__IMAP__PASSWORD", "pw")];
        let at = |host: &str| {
            format!("[bounces.imap]\nhost = \"{host}\"\nport = 143\ntls = \"none\"\nuser = \"b\"\n")
        };
        let err = load(&at("imap.example.org"), &env).unwrap_err().to_string();
        assert!(err.contains("bounces.imap.tls"), "{err}");
        for host in ["127.0.0.1", "localhost", "[::1]"] {
            load(&at(host), &env).unwrap();
        }
    }
}
