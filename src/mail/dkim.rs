//! DKIM (RFC 6376): the signing keys, read once at start, and the `DKIM-Signature` headers put
//! in front of each message as it goes on the wire. Canonicalization is `relaxed/relaxed`;
//! `rsa-sha256` and `ed25519-sha256` (RFC 8463) keys are told apart by the key itself. With
//! several keys, each message carries one signature per key.
//!
//! Signing is done by the `mail-auth` crate. The key files are PEM: PKCS#8 (`BEGIN PRIVATE
//! KEY`) for either algorithm, or PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RSA. Their contents are
//! secrets: nothing here prints them, and `Debug` shows the selector and algorithm only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::Done;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;

/// The headers each signature covers (RFC 8058 asks for the two List-Unsubscribe ones). From
/// is listed twice, once more than it appears, so a second From cannot be added (RFC 6376
/// §8.15); a listed header the message lacks is signed as absent, so it cannot be added either.
const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// `rsa-sha256` with a 2048-bit key: what every verifier knows.
    Rsa,
    /// `ed25519-sha256` (RFC 8463): short keys and signatures; not every verifier knows it
    /// yet, so publish it beside an RSA key.
    Ed25519,
}

impl DkimAlgorithm {
    /// The `k=` tag of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl std::str::FromStr for DkimAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rsa" => Ok(DkimAlgorithm::Rsa),
            "ed25519" => Ok(DkimAlgorithm::Ed25519),
            _ => Err(format!("`{s}` is not a DKIM algorithm: rsa or ed25519")),
        }
    }
}

/// A private key read from its file: what signs, and the public half for DNS.
struct Key {
    selector: String,
    algorithm: DkimAlgorithm,
    /// The `p=` value: SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519 (RFC 8463).
    public_key: Vec<u8>,
    signer: mail_auth::dkim::DkimSigner<DkimKey, Done>,
}

/// The configured DKIM keys (possibly none: then messages go out unsigned).
#[derive(Clone, Default)]
pub struct Dkim {
    domain: String,
    keys: Arc<Vec<Key>>,
}

impl fmt::Debug for Dkim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{} ({})", k.selector, k.algorithm.key_type()))
            .collect();
        write!(f, "Dkim {{ domain: {:?}, keys: {keys:?} }}", self.domain)
    }
}

/// The DNS TXT record that publishes one key's public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimRecord {
    /// `selector._domainkey.domain`
    pub name: String,
    /// `v=DKIM1; k=...; p=...`
    pub value: String,
}

impl DkimRecord {
    /// The value as a zone file writes it: quoted strings of at most 255 bytes each
    /// (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2 joins them back without spaces).
    pub fn quoted_strings(&self) -> String {
        self.value
            .as_bytes()
            .chunks(255)
            .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Dkim {
    /// Reads and parses every key of `[dkim]`; an error names the file and what is wrong.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let domain = config.dkim_domain();
        let keys = config
            .dkim
            .keys
            .iter()
            .map(|k| Key::load(&domain, &k.selector, &config.dkim_key_file(k)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            domain,
            keys: Arc::new(keys),
        })
    }

    /// Whether any key is configured.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The message with one `DKIM-Signature` header per key in front of it, the signatures over
    /// `message` exactly as given (CRLF line endings, not yet dot-stuffed). Without keys, the
    /// message unchanged.
    pub fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.keys.is_empty() {
            return Ok(message);
        }
        let mut headers = String::new();
        for key in self.keys.iter() {
            let signature = key
                .signer
                .sign(&message)
                .map_err(|e| format!("DKIM signing with selector {}: {e}", key.selector))?;
            headers.push_str(&unfold_before_last_semicolon(signature.to_header()));
        }
        let mut signed = Vec::with_capacity(headers.len() + message.len());
        signed.extend_from_slice(headers.as_bytes());
        signed.extend_from_slice(&message);
        Ok(signed)
    }

    /// The DNS records of the configured keys, their public halves derived from the private keys.
    pub fn records(&self) -> Vec<DkimRecord> {
        self.keys
            .iter()
            .map(|k| record(&k.selector, &self.domain, k.algorithm, &k.public_key))
            .collect()
    }
}

/// `mail-auth` 0.13 may fold the header between the end of the `b=` value and its closing
/// `;`, where the signer had hashed `b=;`: relaxed canonicalization turns that fold into a
/// space, and verifiers reject the signature (seen with dkimpy on 2048-bit RSA signatures).
/// The fold is taken out.
fn unfold_before_last_semicolon(mut header: String) -> String {
    if let Some(semicolon) = header.rfind(';') {
        let kept = header[..semicolon]
            .trim_end_matches([' ', '\t', '\r', '\n'])
            .len();
        header.replace_range(kept..semicolon, "");
    }
    header
}

impl Key {
    fn load(domain: &str, selector: &str, path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read DKIM key {}: {e}", path.display()))?;
        let (algorithm, key, public_key) = parse_key(&pem)
            .map_err(|e| anyhow::anyhow!("DKIM key {} is not usable: {e}", path.display()))?;
        let signer = mail_auth::dkim::DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(SIGNED_HEADERS);
        Ok(Key {
            selector: selector.to_owned(),
            algorithm,
            public_key,
            signer,
        })
    }
}

/// The algorithm, the signing key and the public key of a PEM private key.
fn parse_key(pem: &[u8]) -> Result<(DkimAlgorithm, DkimKey, Vec<u8>), String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        "expected a PEM private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)".to_owned()
    })?;
    if let PrivateKeyDer::Pkcs8(pkcs8) = &der
        && let Ok(key) = Ed25519Key::from_pkcs8_der(pkcs8.secret_pkcs8_der())
    {
        let public = key.public_key();
        return Ok((DkimAlgorithm::Ed25519, DkimKey::from(key), public));
    }
    let rsa_key = match &der {
        PrivateKeyDer::Pkcs1(pkcs1) => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            rsa::RsaPrivateKey::from_pkcs1_der(pkcs1.secret_pkcs1_der())
                .map_err(|e| format!("not an RSA key: {e}"))?
        }
        PrivateKeyDer::Pkcs8(pkcs8) => rsa::RsaPrivateKey::from_pkcs8_der(pkcs8.secret_pkcs8_der())
            .map_err(|e| format!("neither an Ed25519 nor an RSA key: {e}"))?,
        _ => return Err("an EC key; DKIM takes RSA or Ed25519".into()),
    };
    let bits = rsa::traits::PublicKeyParts::size(&rsa_key) * 8;
    if bits < 1024 {
        return Err(format!(
            "an RSA key of {bits} bits; verifiers ignore keys under 1024 bits (RFC 8301), use 2048"
        ));
    }
    let public = rsa::RsaPublicKey::from(&rsa_key)
        .to_public_key_der()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec();
    let key = RsaKey::<Sha256>::from_key_der(der.clone_key()).map_err(|e| e.to_string())?;
    Ok((DkimAlgorithm::Rsa, DkimKey::from(key), public))
}

fn record(selector: &str, domain: &str, algorithm: DkimAlgorithm, public_key: &[u8]) -> DkimRecord {
    DkimRecord {
        name: format!("{selector}._domainkey.{domain}"),
        value: format!(
            "v=DKIM1; k={}; p={}",
            algorithm.key_type(),
            base64::engine::general_purpose::STANDARD.encode(public_key)
        ),
    }
}

/// A new private key as PKCS#8 PEM: RSA of 2048 bits or Ed25519.
pub fn generate_key(algorithm: DkimAlgorithm) -> anyhow::Result<String> {
    let der = match algorithm {
        DkimAlgorithm::Rsa => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
            key.to_pkcs8_der()?.as_bytes().to_vec()
        }
        DkimAlgorithm::Ed25519 => {
            Ed25519Key::generate_pkcs8().map_err(|e| anyhow::anyhow!("Ed25519 key: {e}"))?
        }
    };
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// The DNS record of a private key in PEM (for `sangha dkim keygen`).
pub fn record_of_pem(selector: &str, domain: &str, pem: &[u8]) -> Result<DkimRecord, String> {
    let (algorithm, _, public_key) = parse_key(pem)?;
    Ok(record(selector, domain, algorithm, &public_key))
}

/// Where `sangha dkim keygen` writes a selector's key, relative to `data_dir`.
pub fn key_file_for(selector: &str) -> PathBuf {
    Path::new("dkim").join(format!("{selector}.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_record_value_is_split_into_strings_of_at_most_255_bytes() {
        let record = DkimRecord {
            name: "s._domainkey.example.org".into(),
            value: "x".repeat(300),
        };
        let quoted = record.quoted_strings();
        assert_eq!(
            quoted,
            format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45))
        );
    }

    #[test]
    fn keys_of_both_algorithms_are_told_apart_and_give_their_record() {
        let ed = generate_key(DkimAlgorithm::Ed25519).unwrap();
        let record = record_of_pem("ed", "example.org", ed.as_bytes()).unwrap();
        assert_eq!(record.name, "ed._domainkey.example.org");
        assert!(record.value.starts_with("v=DKIM1; k=ed25519; p="));
        let rsa = generate_key(DkimAlgorithm::Rsa).unwrap();
        let record = record_of_pem("r", "example.org", rsa.as_bytes()).unwrap();
        assert!(record.value.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
        assert!(record_of_pem("x", "example.org", b"not a key").is_err());
    }
}
