//! The public archive of the offerings with `archive = true`: `GET /archive` (those
//! offerings), `/archive/{offering}` (its past sends, newest first, a page at a time),
//! `/archive/{offering}/{send}` (one email as a web page) and an Atom feed (RFC 4287) per
//! offering at `/archive/{offering}/feed.xml` (also `feed.atom`).
//!
//! What the store counts as archived is in `store::archive`: started, not private, no lesson.
//! The email is rendered for no one ([`crate::mail::CompiledSend::public_copy`]): no name,
//! no address, no token. Anything else (an unknown offering or send, a private or unstarted
//! one, an offering without an archive) is the same 404.
//!
//! Every answer carries an `ETag` (a hash of its body) and, once a send is archived,
//! `Last-Modified` (when the newest one shown went out); `If-None-Match`, or without it
//! `If-Modified-Since`, gets 304 (RFC 9110, section 13).

use atom_syndication::{Content, Entry, Feed, FixedDateTime, Link, Person, Text};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{AppError, AppState, ErrorKind, pages};
use crate::clock::Millis;
use crate::domain::{OfferingKind, Slug};
use crate::mail::{CompiledSend, OfferingInfo, PublicCopy, SendTemplates};
use crate::store::{Offering, SendContent};

/// Sends on one page of an offering's archive, and entries in its feed.
pub const PER_PAGE: u32 = 20;

/// How long a browser or proxy may keep a page before asking again (with its ETag).
const CACHE_CONTROL: &str = "public, max-age=300";

/// The archive routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/archive", get(index))
        .route("/archive/{offering}", get(offering_page))
        .route("/archive/{offering}/feed.xml", get(feed))
        .route("/archive/{offering}/feed.atom", get(feed))
        .route("/archive/{offering}/{send}", get(send_page))
}

/// `?page=N`, read by hand so that a bad value is our 404 page, not the extractor's 400.
#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<String>,
}

/// An offering as the archive pages list it.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    description: String,
    url: String,
    feed_url: String,
}

/// `GET /archive`: the offerings with an archive.
async fn index(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let mut listed = Vec::new();
    let mut newest: Option<Millis> = None;
    for o in state.config().offerings.iter().filter(|o| has_archive(o)) {
        let Some(offering) = state.store().offering_by_slug(&o.slug).await? else {
            continue;
        };
        newest = newest.max(state.store().archive_newest(offering.id).await?);
        listed.push(listed_offering(&state, &offering));
    }
    let body = page(
        &state,
        "archive_index",
        "Archive",
        json!({ "offerings": listed }),
    )?;
    Ok(cached(&headers, HTML, body, newest))
}

/// `GET /archive/{offering}?page=N`: past sends, newest first.
async fn offering_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let offering = archived_offering(&state, &slug).await?;
    let number = match query.page.as_deref() {
        None => 1,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(ErrorKind::NotFound)?,
    };
    let offset = u64::from(number - 1) * u64::from(PER_PAGE);
    let mut sends = state
        .store()
        .archived_sends(offering.id, PER_PAGE + 1, offset)
        .await?;
    let has_next = sends.len() > PER_PAGE as usize;
    sends.truncate(PER_PAGE as usize);
    if sends.is_empty() && number > 1 {
        return Err(ErrorKind::NotFound.into());
    }
    let base = state.links().archive_url(&offering.slug);
    let mut items = Vec::with_capacity(sends.len());
    for send in &sends {
        let copy = public_copy(&state, &offering, send)?;
        items.push(json!({
            "subject": copy.subject,
            "preheader": copy.preheader,
            "date": copy.date,
            "url": state.links().archive_send_url(&offering.slug, send.id),
        }));
    }
    let context = json!({
        "offering": listed_offering(&state, &offering),
        "feed_url": listed_offering(&state, &offering).feed_url,
        "sends": items,
        "page": number,
        "previous_url": (number > 1).then(|| match number {
            2 => base.clone(),
            n => format!("{base}?page={}", n - 1),
        }),
        "next_url": has_next.then(|| format!("{base}?page={}", number + 1)),
    });
    let body = page(&state, "archive_offering", &offering.name, context)?;
    let newest = state.store().archive_newest(offering.id).await?;
    Ok(cached(&headers, HTML, body, newest))
}

/// `GET /archive/{offering}/{send}`: one email as a web page.
async fn send_page(
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let offering = archived_offering(&state, &slug).await?;
    let id: i64 = id.parse().map_err(|_| ErrorKind::NotFound)?;
    let send = state
        .store()
        .archived_send(offering.id, id)
        .await?
        .ok_or(ErrorKind::NotFound)?;
    let copy = public_copy(&state, &offering, &send)?;
    let context = json!({
        "offering": listed_offering(&state, &offering),
        "feed_url": listed_offering(&state, &offering).feed_url,
        "date": copy.date,
        "preheader": copy.preheader,
        "body": copy.html,
    });
    let body = page(&state, "archive_send", &copy.subject, context)?;
    Ok(cached(&headers, HTML, body, Some(send.send_at)))
}

/// `GET /archive/{offering}/feed.xml`: the newest sends as an Atom feed, each entry the whole
/// web copy.
async fn feed(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let offering = archived_offering(&state, &slug).await?;
    let sends = state
        .store()
        .archived_sends(offering.id, PER_PAGE, 0)
        .await?;
    let links = state.links();
    let site = &state.config().site.name;
    let mut entries = Vec::with_capacity(sends.len());
    for send in &sends {
        let copy = public_copy(&state, &offering, send)?;
        let url = links.archive_send_url(&offering.slug, send.id);
        let sent = atom_time(send.send_at)?;
        entries.push(Entry {
            id: url.clone(),
            title: Text::plain(copy.subject),
            updated: sent,
            published: Some(sent),
            links: vec![link(url, "alternate", "text/html")],
            summary: copy.preheader.map(Text::plain),
            content: Some(Content {
                content_type: Some("html".to_owned()),
                value: Some(copy.html),
                ..Content::default()
            }),
            ..Entry::default()
        });
    }
    let newest = sends.first().map(|s| s.send_at);
    let listed = listed_offering(&state, &offering);
    let feed = Feed {
        id: listed.url.clone(),
        title: Text::plain(format!("{} · {site}", offering.name)),
        subtitle: (!offering.description.is_empty())
            .then(|| Text::plain(offering.description.clone())),
        // An empty archive's feed: the epoch, so its ETag stays the same until a send comes.
        updated: atom_time(newest.unwrap_or(0))?,
        authors: vec![Person {
            name: site.clone(),
            uri: Some(links.base_url().to_owned()),
            ..Person::default()
        }],
        links: vec![
            link(listed.feed_url, "self", "application/atom+xml"),
            link(listed.url, "alternate", "text/html"),
        ],
        entries,
        ..Feed::default()
    };
    Ok(cached(&headers, ATOM, feed.to_string(), newest))
}

const HTML: &str = "text/html; charset=utf-8";
const ATOM: &str = "application/atom+xml; charset=utf-8";

/// Whether a configured offering has a public archive (a course never does: the
/// configuration refuses it, and this holds even so).
fn has_archive(o: &crate::config::OfferingConfig) -> bool {
    o.archive && o.kind == OfferingKind::Newsletter
}

/// The active offering `slug` names when it has an archive; else 404.
async fn archived_offering(state: &AppState, slug: &str) -> Result<Offering, AppError> {
    let slug = Slug::parse(slug).map_err(|_| ErrorKind::NotFound)?;
    if !state
        .config()
        .offerings
        .iter()
        .any(|o| o.slug == slug && has_archive(o))
    {
        return Err(ErrorKind::NotFound.into());
    }
    let offering = state.store().offering_by_slug(&slug).await?;
    Ok(offering.ok_or(ErrorKind::NotFound)?)
}

fn listed_offering(state: &AppState, offering: &Offering) -> Listed {
    let url = state.links().archive_url(&offering.slug);
    Listed {
        name: offering.name.clone(),
        description: offering.description.clone(),
        feed_url: format!("{url}/feed.xml"),
        url,
    }
}

/// A stored send rendered for no one.
fn public_copy(
    state: &AppState,
    offering: &Offering,
    send: &SendContent,
) -> Result<PublicCopy, AppError> {
    let templates = SendTemplates {
        id: send.id,
        subject: &send.subject,
        preheader: send.preheader.as_deref(),
        html: &send.html_template,
        text: &send.text_template,
        send_at: send.send_at,
        private: send.private,
    };
    let info = OfferingInfo {
        id: offering.id,
        slug: &offering.slug,
        name: &offering.name,
        description: &offering.description,
    };
    let compiled = CompiledSend::new(&templates)?;
    compiled
        .public_copy(&info, &state.config().site.name, state.links())
        .map_err(|e| AppError::from(anyhow::Error::from(e)))
}

/// `pages/{name}.html` rendered to its text.
fn page(
    state: &AppState,
    name: &str,
    title: &str,
    context: serde_json::Value,
) -> Result<String, AppError> {
    Ok(pages::html(state, name, title, context)?)
}

fn link(href: String, rel: &str, mime_type: &str) -> Link {
    Link {
        href,
        rel: rel.to_owned(),
        mime_type: Some(mime_type.to_owned()),
        ..Link::default()
    }
}

/// Milliseconds since the epoch as an Atom date (RFC 3339, UTC).
fn atom_time(at: Millis) -> Result<FixedDateTime, AppError> {
    let text = jiff::Timestamp::from_millisecond(at)
        .map_err(anyhow::Error::from)?
        .to_string();
    Ok(FixedDateTime::parse_from_rfc3339(&text).map_err(anyhow::Error::from)?)
}

/// The answer with its validators, or 304 when the client's copy is still current.
/// `If-None-Match` wins over `If-Modified-Since` when both are sent (RFC 9110, 13.1.3).
fn cached(
    request: &HeaderMap,
    content_type: &'static str,
    body: String,
    modified: Option<Millis>,
) -> Response {
    let last_modified = modified
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .and_then(|t| {
            jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&t)
                .ok()
        });
    // The body and its time: a list whose text stays the same while a newer send arrives
    // (the index) still gets a new tag, so the two validators agree.
    let mut hash = Sha256::new();
    hash.update(body.as_bytes());
    hash.update(last_modified.as_deref().unwrap_or_default().as_bytes());
    let etag = format!("\"{}\"", &crate::domain::hex(&hash.finalize())[..32]);
    let fresh = match request.get(header::IF_NONE_MATCH) {
        Some(value) => etag_matches(value, &etag),
        None => match (request.get(header::IF_MODIFIED_SINCE), modified) {
            (Some(since), Some(modified)) => since
                .to_str()
                .ok()
                .and_then(|s| jiff::fmt::rfc2822::parse(s).ok())
                .is_some_and(|since| modified / 1000 <= since.timestamp().as_second()),
            _ => false,
        },
    };
    let mut response = if fresh {
        (StatusCode::NOT_MODIFIED, Body::empty()).into_response()
    } else {
        let mut response = body.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(value) = last_modified.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    response
}

/// Whether an `If-None-Match` value names `etag` (weak comparison), or is `*`.
fn etag_matches(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let etag = "\"abc\"";
        let matches = |v: &str| etag_matches(&HeaderValue::from_str(v).unwrap(), etag);
        assert!(matches("\"abc\""));
        assert!(matches("W/\"abc\""));
        assert!(matches("\"x\", \"abc\""));
        assert!(matches("*"));
        assert!(!matches("\"abcd\""));
        assert!(!matches("abc"));
    }

    #[test]
    fn if_modified_since_is_read_to_the_second() {
        let modified: Millis = 1_780_000_000_500;
        let at = |s: i64| {
            let t = jiff::Timestamp::from_second(s).unwrap();
            let text = jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&t)
                .unwrap();
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MODIFIED_SINCE, text.parse().unwrap());
            cached(&headers, HTML, "x".to_owned(), Some(modified)).status()
        };
        assert_eq!(at(1_780_000_000), StatusCode::NOT_MODIFIED);
        assert_eq!(at(1_780_000_001), StatusCode::NOT_MODIFIED);
        assert_eq!(at(1_779_999_999), StatusCode::OK);
    }
}
