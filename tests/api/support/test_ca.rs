//! A certificate authority made in the test (rcgen), and server certificates from it or
//! self-signed, for the TLS test SMTP server: what a relay with a private CA presents.

#![allow(dead_code)] // Not every test uses every helper.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA: its certificate (to hand to Sangha as `smtp.ca_file`) and its key.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server's certificate and key, ready for a rustls `ServerConfig`.
pub struct ServerCertificate {
    pub der: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server_certificate(&self, names: &[&str]) -> ServerCertificate {
        let key = KeyPair::generate().expect("server key");
        let params = server_params(names);
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        ServerCertificate {
            der: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    /// Writes the CA certificate as PEM into `dir` and returns the file's path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("private-ca.pem");
        std::fs::write(&path, &self.pem).expect("write CA PEM");
        path
    }
}

impl ServerCertificate {
    /// A self-signed certificate marked as a CA, as `openssl req -x509` makes them.
    pub fn self_signed_ca(names: &[&str]) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = server_params(names);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed cert");
        ServerCertificate {
            der: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    /// The certificate's SHA-256 as `openssl x509 -fingerprint -sha256` prints it.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.der.as_ref());
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("server TLS config");
        Arc::new(config)
    }
}

fn server_params(names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("server params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("relay"),
    );
    params
}
