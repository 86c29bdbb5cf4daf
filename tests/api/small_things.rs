//! Small things a visitor notices: the icon every browser asks for, and a time zone reported
//! by its old name (`Asia/Calcutta`, as some browsers still do) kept under its current one.

use sangha::domain::EmailAddress;

use crate::backend_tests;
use crate::support::{Backend, TestApp, stderr, urlencode};

backend_tests!(
    the_pages_serve_an_icon_cached_for_long,
    a_signup_from_asia_calcutta_is_stored_in_asia_kolkata,
    an_imported_row_in_asia_calcutta_is_stored_in_asia_kolkata,
);

async fn zone_of(app: &TestApp, email: &str) -> Option<String> {
    app.store()
        .subscriber_detail(&EmailAddress::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no subscriber {email}"))
        .subscriber
        .timezone
}

fn max_age(response: &reqwest::Response) -> u64 {
    let cache = response.headers()["cache-control"].to_str().unwrap();
    assert!(cache.contains("public"), "{cache}");
    cache
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {cache}"))
        .parse()
        .unwrap()
}

async fn the_pages_serve_an_icon_cached_for_long(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let ico = app.get("/favicon.ico").await;
    assert_eq!(ico.status(), 200);
    assert_eq!(ico.headers()["content-type"], "image/x-icon");
    assert!(max_age(&ico) >= 30 * 86_400);
    let bytes = ico.bytes().await.unwrap();
    // An ICO directory of one 32x32 image, whose data is where the entry says.
    assert_eq!(&bytes[..6], &[0, 0, 1, 0, 1, 0], "an ICO of one image");
    assert_eq!((bytes[6], bytes[7]), (32, 32));
    let size = u32::from_le_bytes(bytes[14..18].try_into().unwrap()) as usize;
    let offset = u32::from_le_bytes(bytes[18..22].try_into().unwrap()) as usize;
    assert_eq!(offset + size, bytes.len());

    let svg = app.get("/favicon.svg").await;
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(max_age(&svg) >= 30 * 86_400);
    let text = svg.text().await.unwrap();
    assert!(
        text.trim_start().starts_with("<svg") && text.contains("viewBox"),
        "{text}"
    );

    // Every page names both, so a browser need not guess.
    for path in ["/subscribe", "/subscribe/check-inbox", "/no-such-page"] {
        let page = app.get(path).await.text().await.unwrap();
        assert!(
            page.contains(r#"<link rel="icon" href="/favicon.svg" type="image/svg+xml">"#)
                && page.contains(r#"<link rel="icon" href="/favicon.ico""#),
            "{path}: {page}"
        );
    }
}

async fn a_signup_from_asia_calcutta_is_stored_in_asia_kolkata(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let form = format!(
        "email=priya%40example.in&offerings=morning-meditation&timezone={}",
        urlencode("Asia/Calcutta")
    );
    assert_eq!(app.post_form("/subscribe", &form).await.status(), 303);
    assert_eq!(
        zone_of(&app, "priya@example.in").await.as_deref(),
        Some("Asia/Kolkata")
    );
    let json = serde_json::json!({
        "email": "arjun@example.in",
        "offerings": ["morning-meditation"],
        "timezone": "Asia/Calcutta",
    });
    assert_eq!(app.post_json("/subscribe", &json).await.status(), 202);
    assert_eq!(
        zone_of(&app, "arjun@example.in").await.as_deref(),
        Some("Asia/Kolkata")
    );
}

async fn an_imported_row_in_asia_calcutta_is_stored_in_asia_kolkata(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = app.dir.path().join("people.csv");
    std::fs::write(
        &path,
        "email,name,timezone,offerings\r\n\
         meera@example.in,Meera,Asia/Calcutta,morning-meditation\r\n\
         kiev@example.org,,Europe/Kiev,morning-meditation\r\n",
    )
    .unwrap();
    let out = app.cli(&["subscribers", "import", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        zone_of(&app, "meera@example.in").await.as_deref(),
        Some("Asia/Kolkata")
    );
    assert_eq!(
        zone_of(&app, "kiev@example.org").await.as_deref(),
        Some("Europe/Kyiv")
    );
}
