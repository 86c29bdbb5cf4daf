//! What the SES webhook fetches from Amazon SNS: signing certificates (each fetched once and
//! kept, a few at most) and subscription confirmations. The fetching is behind [`SnsFetch`],
//! which only ever takes an [`SnsUrl`], so nothing is fetched from a host that is not Amazon
//! SNS's; the application uses [`HttpsFetch`], tests one that answers with certificates of their
//! own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::bounces::{SnsKey, SnsUrl};

/// The most of an answer read (a certificate is under 2 KiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long one fetch may take, connection and answer included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How many signing certificates are kept (SNS signs with one per region, changed rarely).
const KEPT_CERTIFICATES: usize = 16;

/// Why a fetch from Amazon SNS failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// SNS answered, but not with success: the URL names nothing of SNS's.
    #[error("Amazon SNS answered {0}")]
    Status(u16),
    /// SNS could not be reached, or its answer read, in time: worth retrying later.
    #[error("Amazon SNS could not be reached: {0}")]
    Unreachable(String),
}

/// GETs a URL on an Amazon SNS host.
pub trait SnsFetch: Send + Sync {
    /// The body of a successful answer to `GET url`, at most 64 KiB of it.
    fn get<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Vec<u8>, FetchError>>;
}

/// [`SnsFetch`] over HTTPS (rustls on ring, Mozilla's roots), HTTP/1.1.
pub struct HttpsFetch {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpsFetch {
    /// A client that speaks only HTTPS.
    pub fn new() -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_only()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn fetch(&self, url: &SnsUrl) -> Result<Vec<u8>, FetchError> {
        let unreachable = |e: &dyn std::fmt::Display| FetchError::Unreachable(e.to_string());
        let request = axum::http::Request::get(url.as_str())
            .header(axum::http::header::USER_AGENT, "sangha")
            .body(Empty::new())
            .map_err(|e| unreachable(&e))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(&*e))?;
        Ok(body.to_bytes().to_vec())
    }
}

impl Default for HttpsFetch {
    fn default() -> Self {
        Self::new()
    }
}

impl SnsFetch for HttpsFetch {
    fn get<'a>(&'a self, url: &'a SnsUrl) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(async move {
            tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url))
                .await
                .unwrap_or_else(|_| Err(FetchError::Unreachable("timed out".into())))
        })
    }
}

/// Why a signing certificate's key could not be had.
#[derive(Debug, thiserror::Error)]
pub(super) enum CertificateError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// What SNS served is not an RSA certificate.
    #[error("unreadable signing certificate: {0}")]
    Unreadable(String),
}

/// The fetcher and the signing certificates' keys fetched so far.
pub(super) struct Sns {
    fetch: Arc<dyn SnsFetch>,
    /// URL → key, oldest first.
    keys: Mutex<Vec<(SnsUrl, Arc<SnsKey>)>>,
}

impl Sns {
    pub(super) fn new(fetch: Arc<dyn SnsFetch>) -> Self {
        Self {
            fetch,
            keys: Mutex::new(Vec::new()),
        }
    }

    /// The key of the certificate at `url`: kept from before, or fetched and kept.
    pub(super) async fn key(&self, url: &SnsUrl) -> Result<Arc<SnsKey>, CertificateError> {
        if let Some(key) = self.kept(url) {
            return Ok(key);
        }
        let pem = self.fetch.get(url).await?;
        let key = Arc::new(SnsKey::from_pem(&pem).map_err(CertificateError::Unreadable)?);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if !keys.iter().any(|(u, _)| u == url) {
            if keys.len() >= KEPT_CERTIFICATES {
                keys.remove(0);
            }
            keys.push((url.clone(), key.clone()));
        }
        Ok(key)
    }

    fn kept(&self, url: &SnsUrl) -> Option<Arc<SnsKey>> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().find(|(u, _)| u == url).map(|(_, k)| k.clone())
    }

    /// Confirms a subscription: GETs its `SubscribeURL`.
    pub(super) async fn confirm(&self, subscribe_url: &SnsUrl) -> Result<(), FetchError> {
        self.fetch.get(subscribe_url).await.map(drop)
    }
}
