//! `GET /favicon.ico` and `GET /favicon.svg`: the lotus every browser asks for.
//!
//! Both are answered, not one redirected to the other: browsers that read the SVG take it
//! from the page's `<link rel="icon" type="image/svg+xml">`, and `/favicon.ico` (which a
//! browser, a feed reader or a bookmark tool fetches by that name without reading any page)
//! is a real ICO, since a redirect from it to an SVG is followed by some of them and not by
//! others (Safari only recently reads SVG icons). The ICO is made from the SVG's shapes by
//! `scripts/favicon-ico.py`. They change only with a release, so they are cached for a year.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const ICO: &[u8] = include_bytes!("../../static/favicon.ico");
const SVG: &[u8] = include_bytes!("../../static/favicon.svg");
const CACHE: &str = "public, max-age=31536000";

/// The icon routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/favicon.ico", get(ico))
        .route("/favicon.svg", get(svg))
}

async fn ico() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            (header::CACHE_CONTROL, CACHE),
        ],
        ICO,
    )
}

async fn svg() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, CACHE),
        ],
        SVG,
    )
}
