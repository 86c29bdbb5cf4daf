//! Hostile input: property tests and fixed cases for what strangers, bots and careless files
//! send. Whatever comes in, nothing panics, nothing answers 5xx, nothing a visitor typed becomes
//! a header or live HTML, and an oversized body gets 413.
//!
//! Each property draws a fixed number of cases from a seed derived from its name, so every run
//! tries the same inputs; failures are reported (shrunk) in the test output, not persisted.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lettre::message::Mailbox;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{RngAlgorithm, TestCaseResult, TestRng, TestRunner};
use reqwest::StatusCode;
use sangha::content;
use sangha::domain::{
    DeliveryKind, EmailAddress, SubscriberName, Token, TokenError, TokenKey, TokenPurpose,
};
use sangha::mail::{EmailContent, build_message};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::backend_tests;
use crate::support::{
    Backend, DEADLINE, TEST_TOKEN_KEY, TestApp, eventually_async, run_cli, stderr, stdout,
    test_config, urlencode,
};

// ---------------------------------------------------------------------------------------------
// Running properties

/// Runs `test` on `cases` values of `strategy`, seeded from `name`: the same inputs every run.
fn check<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    };
    let seed: [u8; 32] = Sha256::digest(name.as_bytes()).into();
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("property `{name}` failed: {failure}");
    }
}

/// A multi-threaded runtime for a property that talks HTTP: one app serves every case.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Text made of `pieces` and free text between them.
fn made_of(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    vec(
        prop_oneof![3 => select(pieces).prop_map(str::to_owned), 1 => "\\PC{0,6}"],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

/// Characters that end or break header lines and HTML, with ordinary text around them.
const HOSTILE: &[&str] = &[
    "\r\n",
    "\r",
    "\n",
    "\0",
    "\t",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\r\nBcc: evil@example.com",
    "\nBcc: evil@example.com\n",
    "\r\n\r\n<html>body</html>",
    "Bcc: evil@example.com",
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "=?utf-8?q?=0D=0ABcc:_evil@example.com?=",
    "\"",
    "\\",
    ":",
    ";",
    ",",
    "<",
    ">",
    "@",
    "Śakti",
    "😀",
    " ",
    "Mira",
];

// ---------------------------------------------------------------------------------------------
// Email addresses

/// Address-shaped text: plausible locals and domains, the characters validators disagree on,
/// surrounding space, several or no `@`, and free text.
fn address_like() -> impl Strategy<Value = String> {
    let local = prop_oneof![
        "[a-zA-Z0-9._+-]{1,20}",
        "[a-z.]{1,8}",
        "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~@\" ()<>,;:\\\\\\[\\]-]{0,70}",
        "[a-z]{60,70}",
        "\\PC{0,12}",
    ];
    let domain = prop_oneof![
        "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}",
        "[a-z]{1,63}(\\.[a-z]{1,63}){1,4}",
        "[a-zA-Z0-9İKẞßÄ.-]{1,40}",
        "(İ{1,20}\\.){1,8}org",
        "\\[[0-9a-fA-F:.]{1,20}\\]",
        "\\PC{0,12}",
    ];
    let at = select(vec!["@", "@", "@", "@@", "", "\u{ff20}"]);
    let space = "[ \\t\\r\\n\\x00\\x{a0}\\x{2028}]{0,2}";
    prop_oneof![
        4 => (space, local, at, domain, space)
            .prop_map(|(a, l, at, d, b)| format!("{a}{l}{at}{d}{b}")),
        1 => any::<String>(),
    ]
}

#[test]
fn email_parsing_never_panics_and_what_it_accepts_is_canonical_and_sendable() {
    check("email_parsing", 512, address_like(), |input| {
        let Ok(email) = EmailAddress::parse(&input) else {
            return Ok(());
        };
        let s = email.as_str();
        prop_assert!(s.len() <= EmailAddress::MAX_LEN, "{} bytes: {s:?}", s.len());
        prop_assert!(
            !s.chars().any(|c| c.is_control() || c.is_whitespace()),
            "{s:?}"
        );
        // validator takes the HTML5 form of an address, which has no quoted local part:
        // so there is exactly one `@`, the one between local part and domain.
        prop_assert_eq!(s.matches('@').count(), 1, "{:?}", s);
        let (local, domain) = s.split_once('@').expect("one @");
        prop_assert_eq!(domain, email.domain());
        prop_assert_eq!(domain.to_lowercase(), domain);
        // The local part is kept as typed (RFC 5321 lets servers treat its case).
        let typed_local = input.trim().rsplit_once('@').expect("an @").0;
        prop_assert_eq!(local, typed_local);
        // Normalising is idempotent: the stored form parses to itself.
        prop_assert_eq!(EmailAddress::parse(s), Ok(email.clone()));
        // And mail can be addressed to it: the worker parses it again with lettre.
        prop_assert!(
            s.parse::<lettre::Address>().is_ok(),
            "accepted {s:?}, which lettre cannot address a message to"
        );
        Ok(())
    });
}

#[test]
fn addresses_that_validator_takes_but_mail_cannot_reach_are_refused() {
    // The HTML5 rule lets dots run together or stand at either end of the local part; RFC 5322
    // (and lettre, which builds the message) does not, so the confirmation could never be sent.
    for bad in [
        "a..b@example.org",
        ".a@example.org",
        "a.@example.org",
        "....@example.org",
    ] {
        assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
    }
    // Lowercasing may lengthen a domain (`İ` is two bytes, `i̇` three): the limit holds after it.
    let long = format!(
        "{}@{}org",
        "a".repeat(60),
        "İİİİİİİİİİİİİİİİİİİİ.".repeat(4)
    );
    assert!(long.len() <= EmailAddress::MAX_LEN, "{}", long.len());
    assert_eq!(
        EmailAddress::parse(&long).map_err(|e| e.to_string()),
        Err("This email address is too long.".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn name_parsing_never_panics_and_accepted_names_are_one_clean_line() {
    let name_like = prop_oneof![
        made_of(HOSTILE, 8),
        "[ \\t\\r\\n\\x00\\x1b\\x7f\\x{85}\\x{a0}\\x{2028}a-zA-Zäś<>\"'&]{0,120}",
        "\\PC{95,105}",
        any::<String>(),
    ];
    check("name_parsing", 512, name_like, |input| {
        match SubscriberName::parse(&input) {
            Ok(None) => prop_assert!(input.trim().is_empty()),
            Ok(Some(name)) => {
                let s = name.as_str();
                prop_assert_eq!(s, input.trim());
                prop_assert!(!s.is_empty());
                prop_assert!(!s.chars().any(char::is_control), "{:?}", s);
                prop_assert!(s.chars().count() <= SubscriberName::MAX_CHARS);
                prop_assert_eq!(SubscriberName::parse(s), Ok(Some(name.clone())));
            }
            Err(message) => {
                let trimmed = input.trim();
                prop_assert!(!message.to_string().is_empty());
                prop_assert!(
                    trimmed.chars().any(char::is_control)
                        || trimmed.chars().count() > SubscriberName::MAX_CHARS,
                    "refused {:?}: {}",
                    input,
                    message
                );
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn key() -> TokenKey {
    TokenKey::from_base64(TEST_TOKEN_KEY).expect("test key")
}

const PURPOSES: [TokenPurpose; 3] = [
    TokenPurpose::Confirm,
    TokenPurpose::Unsubscribe,
    TokenPurpose::Preferences,
];

fn purpose() -> impl Strategy<Value = TokenPurpose> {
    select(PURPOSES.to_vec())
}

fn claims() -> impl Strategy<Value = Token> {
    let expires = prop_oneof![Just(0i64), any::<i64>(), 1_700_000_000i64..1_900_000_000];
    (purpose(), any::<i64>(), any::<i64>(), expires, any::<i64>()).prop_map(
        |(purpose, subject, scope, expires, binding)| Token {
            purpose,
            subject,
            scope,
            expires,
            binding,
        },
    )
}

#[test]
fn random_text_and_bytes_are_never_a_valid_token() {
    let junk = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{50,60}",
        vec(any::<u8>(), 0..100).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        vec(any::<u8>(), 0..80).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        // The right length, version and a real purpose: only the MAC is wrong.
        (vec(any::<u8>(), 42), 1u8..=3).prop_map(|(mut b, p)| {
            b[0] = 1;
            b[1] = p;
            URL_SAFE_NO_PAD.encode(b)
        }),
    ];
    let key = key();
    check("token_junk", 512, (junk, any::<i64>()), |(text, now)| {
        for purpose in PURPOSES {
            prop_assert!(key.verify(&text, purpose, now).is_err(), "{:?}", text);
        }
        Ok(())
    });
}

#[test]
fn a_token_is_accepted_only_for_its_purpose_and_until_it_expires() {
    let key = key();
    let strategy = (claims(), purpose(), any::<i64>());
    check("token_purpose", 256, strategy, |(token, asked, now)| {
        let text = key.sign(&token);
        prop_assert_eq!(text.len(), 67);
        let got = key.verify(&text, asked, now);
        if asked != token.purpose {
            prop_assert_eq!(got, Err(TokenError::WrongPurpose));
        } else if token.expires != 0 && now > token.expires {
            prop_assert_eq!(got, Err(TokenError::Expired));
        } else {
            prop_assert_eq!(got, Ok(token));
        }
        Ok(())
    });
}

#[test]
fn any_one_character_change_to_a_token_is_refused() {
    let key = key();
    let alphabet: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.% \0é"
            .chars()
            .collect();
    #[derive(Debug, Clone, Copy)]
    enum Edit {
        Replace,
        Insert,
        Delete,
    }
    let edit = select(vec![
        Edit::Replace,
        Edit::Replace,
        Edit::Insert,
        Edit::Delete,
    ]);
    let strategy = (claims(), 0usize..67, select(alphabet), edit);
    check("token_tamper", 512, strategy, |(token, at, c, edit)| {
        let token = Token {
            expires: 0,
            ..token
        };
        let text = key.sign(&token);
        let mut chars: Vec<char> = text.chars().collect();
        match edit {
            Edit::Replace if chars[at] == c => return Ok(()),
            Edit::Replace => chars[at] = c,
            Edit::Insert => chars.insert(at, c),
            Edit::Delete => {
                chars.remove(at);
            }
        }
        let tampered: String = chars.into_iter().collect();
        prop_assert!(
            key.verify(&tampered, token.purpose, 0).is_err(),
            "{:?} accepted as {:?}",
            tampered,
            text
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Content files

/// Front matter lines that are fine, and lines that are not.
const GOOD_FRONT_LINES: &[&str] = &[
    "preheader: Five quiet minutes",
    "preheader: \"For {{name}} | {{site.name}}\"",
    "offering: morning-meditation",
    "day: 3",
    "day: 0",
    "# a comment: with a colon",
    "",
    "   ",
];

const BAD_FRONT_LINES: &[&str] = &[
    "subjet: typo",
    "subject: again",
    "preheader:",
    "preheader: {{nmae}}",
    "offering: Morning Meditation",
    "offering: ../../etc",
    "day: -1",
    "day: 99999999999999999999",
    "day: 3.5",
    "no colon here",
    ": no key",
    "subject \"quoted",
    "\u{0}: nul",
    "ü😀: unicode key",
];

/// Subjects: front matter is line based, so none holds a line break.
const GOOD_SUBJECTS: &[&str] = &[
    "Hello {{name}}",
    "\"Quoted {{name}}\"",
    "'single'",
    "Plain words",
    "<script>alert(1)</script> for {{name}}",
    "a: b: c | d",
    "ü😀 {{offering.name}}",
    "=?utf-8?q?=0D=0ABcc:_evil@example.com?=",
];

const BAD_SUBJECTS: &[&str] = &[
    "\"unclosed",
    "'mixed\"",
    "\"has \" inside\"",
    "",
    "   ",
    "{{nmae}}",
    "{{#if name}}x",
    "{{{name}}}",
    "{{",
    "\u{0}",
];

/// Body pieces that are valid wherever they stand.
const SAFE_PIECES: &[&str] = &[
    "Dear friend, ",
    "{{name}}",
    "{{ name }}",
    "{{~name~}}",
    "{{offering.name}}",
    "{{site.base_url}}",
    "{{lookup site \"name\"}}",
    "{{! a comment }}",
    "{{!-- a }} comment --}}",
    "\\{{name}}",
    "{#if}",
    "{ } }",
    "{{#if name}}\n{{name}}\n{{else}}\nfriend\n{{/if}}\n",
    "{{#unless email}}no{{/unless}}",
    "{{#with offering}}{{name}}{{/with}}",
    "[leave]({{unsubscribe_url}})",
    "<a href=\"{{preferences_url}}\">x</a>",
    "| a | b |\n|---|---|\n| {{name}} | c |\n",
    "|",
    "<script>alert(1)</script>",
    "<div>",
    "</div>",
    "<!--",
    "-->",
    "    indented {{date}}\n",
    "```\n",
    "`{{email}}`",
    "> quote\n",
    "- item\n",
    "1. one\n",
    "# Heading {{name}}\n",
    "---\n",
    "***",
    "hbsph0x7q",
    "hbsph0x7q0z",
    "\n",
    "\n\n",
    "\r\n",
    "\0",
    "ünï😀",
    "&amp; &lt; &#123;",
];

/// Body pieces that break the template on their own, or are refused.
const RISKY_PIECES: &[&str] = &[
    "{{",
    "}}",
    "{{{name}}}",
    "{{& name}}",
    "{{#if name}}",
    "{{else}}",
    "{{/if}}",
    "{{#each site}}",
    "{{/each}}",
    "{{nmae}}",
    "{{> partial}}",
    "{{name.}}",
    "{{../name}}",
    "{{@index}}",
    "{{#if}}{{/if}}",
];

/// Content-file-shaped text: an opening line, `key: value` lines (mostly good), a closing line
/// and a body of Markdown, HTML and handlebars pieces (mostly valid).
fn content_like() -> impl Strategy<Value = String> {
    let subject = prop_oneof![
        6 => select(GOOD_SUBJECTS).prop_map(str::to_owned),
        1 => select(BAD_SUBJECTS).prop_map(str::to_owned),
        1 => "[^\\n]{0,20}",
    ]
    .prop_map(|s| format!("subject: {s}\n"));
    let line = prop_oneof![
        8 => select(GOOD_FRONT_LINES),
        1 => select(BAD_FRONT_LINES),
    ]
    .prop_map(|l| format!("{l}\n"));
    let piece = prop_oneof![
        20 => select(SAFE_PIECES).prop_map(str::to_owned),
        1 => select(RISKY_PIECES).prop_map(str::to_owned),
        2 => "\\PC{0,6}",
    ];
    let structured = (
        prop_oneof![
            8 => Just("---\n"),
            1 => select(vec!["---\r\n", "\u{feff}---\n", "--- \n", "", "--\n"]),
        ],
        prop::option::weighted(0.9, subject),
        vec(line, 0..4),
        prop_oneof![
            8 => Just("---\n"),
            1 => select(vec!["---\r\n", "", "---", "--- x\n"]),
        ],
        vec(piece, 0..16).prop_map(|pieces| pieces.concat()),
    )
        .prop_map(|(open, subject, lines, close, body)| {
            let subject = subject.unwrap_or_default();
            format!("{open}{subject}{}{close}{body}", lines.concat())
        });
    prop_oneof![8 => structured, 1 => any::<String>()]
}

/// The lines of `source`, counted as an editor does (a last line without `\n` counts).
fn line_count(source: &str) -> usize {
    source.lines().count().max(1)
}

fn line_is_in_file(error: &content::ContentError, lines: usize) -> TestCaseResult {
    if let Some(line) = error.line {
        prop_assert!(
            (1..=lines).contains(&line),
            "line {} of a {}-line file: {}",
            line,
            lines,
            error
        );
    }
    prop_assert!(!error.message.is_empty());
    Ok(())
}

#[test]
fn markdown_content_never_panics_and_errors_name_a_line_of_the_file() {
    let path = Path::new("hostile.md");
    // How many cases were refused when parsing, refused when checked, and rendered.
    let outcomes = std::sync::Mutex::new([0u32; 3]);
    check("content_markdown", 512, content_like(), |source| {
        let lines = line_count(&source);
        let content = match content::parse_markdown(path, &source) {
            Ok(content) => content,
            Err(error) => {
                outcomes.lock().unwrap()[0] += 1;
                return line_is_in_file(&error, lines);
            }
        };
        if let Err(error) = content::check(&content) {
            outcomes.lock().unwrap()[1] += 1;
            return line_is_in_file(&error, lines);
        }
        outcomes.lock().unwrap()[2] += 1;
        // Checked content renders, and a name typed by a subscriber stays text in the HTML.
        let mut context = content::sample_context();
        context["name"] = json!("<xss-probe onerror=\"x\">");
        let mut registry = content::registry(content::Escape::Html);
        registry
            .register_template_string("html", &content.html)
            .map_err(|e| TestCaseError::fail(format!("checked HTML does not compile: {e}")))?;
        let html = registry
            .render("html", &context)
            .map_err(|e| TestCaseError::fail(format!("checked HTML does not render: {e}")))?;
        prop_assert!(!html.contains("<xss-probe"), "{}", html);
        Ok(())
    });
    let [unparsed, unchecked, rendered] = outcomes.into_inner().unwrap();
    eprintln!(
        "markdown: {unparsed} refused by the parser, {unchecked} by the check, {rendered} rendered"
    );
    assert!(unparsed > 0 && unchecked > 0 && rendered > 0);
}

#[test]
fn handlebars_pairs_never_panic_and_errors_name_a_line_of_the_right_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let html_path = dir.path().join("hostile.html.hbs");
    let text_path = dir.path().join("hostile.txt.hbs");
    let strategy = (
        content_like(),
        prop_oneof![
            content_like(),
            made_of(SAFE_PIECES, 8),
            made_of(RISKY_PIECES, 4)
        ],
    );
    check("content_pair", 128, strategy, |(html, text)| {
        std::fs::write(&html_path, &html).expect("write html");
        std::fs::write(&text_path, &text).expect("write text");
        if let Err(error) = content::load(&html_path) {
            let lines = if error.path == html_path {
                line_count(&html)
            } else {
                prop_assert_eq!(&error.path, &text_path, "{}", error);
                line_count(&text)
            };
            line_is_in_file(&error, lines)?;
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Message headers

/// The headers every message has, and the extra ones given here.
const EXPECTED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Message-ID",
    "Date",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Id",
];

/// Builds a message with hostile subject, display name and extra header values, and checks
/// that its header block holds exactly the expected headers.
fn assert_headers_hold(subject: &str, name: &str, extra: &str) -> TestCaseResult {
    let from: Mailbox = "Shakti Temple <hello@example.com>".parse().expect("from");
    let to = Mailbox::new(
        Some(name.to_owned()),
        "radha@example.org".parse().expect("to"),
    );
    let message = build_message(
        &from,
        &from.email,
        to,
        "<0123456789abcdef@example.com>",
        EmailContent {
            subject: subject.to_owned(),
            html: format!("<p>{extra}</p>"),
            text: extra.to_owned(),
        },
        vec![
            (
                "List-Unsubscribe",
                format!("<https://example.com/u/{extra}>"),
            ),
            ("List-Id", format!("{extra} <list.example.com>")),
        ],
    );
    let Ok(message) = message else {
        // No message at all is safe; lettre refused it.
        return Ok(());
    };
    let raw = message.formatted();
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..head_end]);
    for line in head.split("\r\n") {
        prop_assert!(!line.contains('\r') && !line.contains('\n') && !line.contains('\0'));
        if line.starts_with([' ', '\t']) {
            continue; // a folded continuation of the header above
        }
        let field = line.split(':').next().unwrap_or("");
        prop_assert!(
            EXPECTED_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(field)),
            "unexpected header line {:?} in\n{}",
            line,
            head
        );
    }
    let parsed = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("a parsable message");
    let mut names: Vec<String> = parsed
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect();
    names.sort();
    let mut expected: Vec<String> = EXPECTED_HEADERS
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    expected.sort();
    prop_assert_eq!(names, expected, "\n{}", head);
    // Text that looks like an RFC 2047 encoded word is passed through as typed, and a reader
    // decodes it: whatever it decodes to stays inside this one header.
    if !subject.contains("=?") {
        let shown = parsed.subject().unwrap_or("");
        prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
    }
    if !name.contains("=?") {
        let shown = parsed
            .to()
            .and_then(|to| to.first())
            .and_then(|a| a.name())
            .unwrap_or("");
        prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
    }
    prop_assert_eq!(parsed.to().map(|to| to.iter().count()), Some(1));
    prop_assert_eq!(
        parsed
            .to()
            .and_then(|to| to.first())
            .and_then(|a| a.address()),
        Some("radha@example.org")
    );
    Ok(())
}

#[test]
fn subjects_names_and_header_values_with_line_breaks_never_make_a_header() {
    let text = || made_of(HOSTILE, 6);
    check(
        "message_headers",
        256,
        (text(), text(), text()),
        |(subject, name, extra)| assert_headers_hold(&subject, &name, &extra),
    );
}

#[test]
fn a_bcc_line_in_a_subject_or_name_stays_inside_its_header() {
    for evil in [
        "Hello\r\nBcc: evil@example.com",
        "Hello\nBcc: evil@example.com",
        "Hello\rBcc: evil@example.com",
        "Hello\0\r\nBcc: evil@example.com\r\n\r\nforged body",
        "\r\nBcc: evil@example.com",
    ] {
        assert_headers_hold(evil, evil, evil).unwrap_or_else(|e| panic!("{evil:?}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// CSV import through the command line

const CSV_CELLS: &[&str] = &[
    "asha@example.org",
    "ASHA@Example.ORG",
    "a..b@example.org",
    "not-an-address",
    "",
    "Asha",
    "=HYPERLINK(\"http://evil\")",
    "'=1+1",
    "\"quoted, with comma\"",
    "\"unclosed",
    "\"\"",
    "Mira\r\nBcc: evil@example.com",
    "a\0b",
    "Asia/Kathmandu",
    "Mars/Olympus",
    "morning-meditation",
    "morning-meditation;guided-meditations",
    ";;",
    "MORNING-MEDITATION",
    "no-such-offering",
    "<script>alert(1)</script>",
    "Śakti 😀",
];

fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let cell = prop_oneof![
        4 => select(CSV_CELLS).prop_map(|c| c.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..8),
    ];
    let row = (
        vec(cell, 0..6),
        select(vec![&b","[..], b";", b"\t"]),
        select(vec![&b"\n"[..], b"\r\n", b"\r", b""]),
    )
        .prop_map(|(cells, sep, end)| {
            let mut row = cells.join(sep);
            row.extend_from_slice(end);
            row
        });
    let header = prop_oneof![
        6 => select(vec![
            &b"email,name,timezone,offerings\n"[..],
            b"email,name,timezone,offerings\r\n",
            b"\xef\xbb\xbfemail,name,timezone,offerings\n",
            b"email,name,timezone,offerings,statuses,created_at,confirmed_at,consent_at,\
              consent_source\n",
        ]),
        1 => select(vec![
            &b"offerings,email\n"[..],
            b"email,email,name,timezone,offerings\n",
            b"",
            b"\xff\xfe",
        ]),
    ];
    prop_oneof![
        6 => (header, vec(row, 0..8)).prop_map(|(h, rows)| [h.to_vec(), rows.concat()].concat()),
        1 => vec(any::<u8>(), 0..300),
    ]
}

#[test]
fn any_csv_file_is_imported_or_refused_with_a_line_never_a_panic() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = rt.block_on(test_config(&Backend::Sqlite, dir.path()));
    let path = dir.path().join("people.csv");
    let path_arg = path.to_str().expect("utf-8 path").to_owned();
    let outcomes = std::sync::Mutex::new((0u32, 0u32));
    // Each case is a process: few cases, each a whole file of oddities.
    check("csv_import", 16, csv_like(), |bytes| {
        std::fs::write(&path, &bytes).expect("write csv");
        let out = run_cli(&config, &["subscribers", "import", &path_arg]);
        let err = stderr(&out);
        prop_assert!(!err.contains("panicked"), "{}", err);
        let mut tally = outcomes.lock().unwrap();
        if out.status.success() {
            tally.0 += 1;
            prop_assert!(stdout(&out).contains("row(s) read"), "{}", stdout(&out));
            for line in err.lines().filter(|l| !l.trim().is_empty()) {
                prop_assert!(line.starts_with("line "), "stray output {:?}", line);
            }
        } else {
            tally.1 += 1;
            prop_assert_eq!(out.status.code(), Some(1), "{}", err);
            prop_assert!(
                err.contains("line ") || err.contains("is empty"),
                "a refusal that names no line: {}",
                err
            );
        }
        Ok(())
    });
    let (imported, refused) = outcomes.into_inner().unwrap();
    eprintln!("csv import: {imported} file(s) imported, {refused} refused");
    assert!(
        imported > 0 && refused > 0,
        "{imported} imported, {refused} refused"
    );
}

// ---------------------------------------------------------------------------------------------
// Signup over HTTP

const FIELD_KEYS: &[&str] = &[
    "email",
    "name",
    "offerings",
    "offerings[]",
    "timezone",
    "website",
    "EMAIL",
    "email ",
    "",
    "x",
];

const FIELD_VALUES: &[&str] = &[
    "radha@example.org",
    "  Devi.Ma@Example.ORG ",
    "a..b@example.org",
    ".a@example.org",
    "x@localhost",
    "not-an-address",
    "morning-meditation",
    "guided-meditations",
    "orgasmic-queen",
    "conscious-awakening",
    "no-such-thing",
    "Asia/Kathmandu",
    "UTC",
    "Mars/Olympus",
    "../../etc/passwd",
    "",
];

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(FIELD_VALUES).prop_map(str::to_owned),
        1 => "[a-z]{1,8}@example\\.org",
        2 => made_of(HOSTILE, 5),
        1 => any::<String>(),
    ]
}

/// A form body: well-encoded pairs, pairs written raw (stray `%`, `+`, `&`, `=`), or bytes.
fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let pairs = || vec((select(FIELD_KEYS), field_value()), 0..7);
    prop_oneof![
        3 => pairs().prop_map(|pairs| {
            let mut out = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                out.append_pair(k, v);
            }
            out.finish().into_bytes()
        }),
        1 => pairs().prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes()
        }),
        1 => vec(
            prop_oneof![
                select(vec!["%", "%0", "%00", "%ff", "%FF%FE", "%e2%82", "+", "&", "=", "email="])
                    .prop_map(|s| s.as_bytes().to_vec()),
                vec(any::<u8>(), 0..6),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        field_value().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((select(FIELD_KEYS).prop_map(str::to_owned), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON body: an object with the signup's keys, any value, or broken JSON text.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let object = vec((select(FIELD_KEYS), json_value()), 0..6).prop_map(|kv| {
        let map: serde_json::Map<String, Value> =
            kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&Value::Object(map)).expect("json")
    });
    prop_oneof![
        4 => object,
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        1 => (json_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let bytes = serde_json::to_vec(&v).expect("json");
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
        1 => vec(any::<u8>(), 0..40),
    ]
}

const CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "APPLICATION/X-WWW-FORM-URLENCODED; charset=ISO-8859-1",
    "application/json",
    "application/json; charset=utf-16",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
];

/// Mostly one of `plausible`, sometimes anything.
fn plausible(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![4 => select(values).prop_map(str::to_owned), 1 => field_value()]
}

/// The fields of a signup, each mostly plausible and sometimes hostile, and stray pairs: so
/// that many cases pass validation and reach the database and the outbox.
fn signup_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let email = prop_oneof![
        3 => "[a-z]{1,8}(\\.[a-z]{1,4})?@[a-z]{1,6}\\.org",
        1 => field_value(),
    ];
    let names = &[
        "Radha",
        "  Mīra Bāī ",
        "<b>Kali</b>",
        "O'Brien & \"Co\"",
        "Śakti 😀",
        "",
    ];
    let slugs = &["morning-meditation", "guided-meditations", "orgasmic-queen"];
    let zones = &["Asia/Kathmandu", "UTC", "America/New_York", ""];
    (
        email,
        prop::option::of(plausible(names)),
        vec(plausible(slugs), 0..3),
        prop::option::of(plausible(zones)),
        prop::option::weighted(0.1, field_value()),
        vec(
            (select(FIELD_KEYS).prop_map(str::to_owned), field_value()),
            0..3,
        ),
    )
        .prop_map(|(email, name, offerings, zone, honeypot, stray)| {
            let mut pairs = vec![("email".to_owned(), email)];
            pairs.extend(name.map(|n| ("name".to_owned(), n)));
            pairs.extend(offerings.into_iter().map(|o| ("offerings".to_owned(), o)));
            pairs.extend(zone.map(|z| ("timezone".to_owned(), z)));
            pairs.extend(honeypot.map(|h| ("website".to_owned(), h)));
            pairs.extend(stray);
            pairs
        })
}

fn signup_form() -> impl Strategy<Value = Vec<u8>> {
    signup_pairs().prop_map(|pairs| {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            out.append_pair(k, v);
        }
        out.finish().into_bytes()
    })
}

/// The same fields as a JSON object (offerings as a list), sometimes with a field of any type.
fn signup_json() -> impl Strategy<Value = Vec<u8>> {
    let overrides = vec((select(FIELD_KEYS), json_value()), 0..2);
    (signup_pairs(), overrides).prop_map(|(pairs, overrides)| {
        let mut object = serde_json::Map::new();
        let mut offerings = Vec::new();
        for (k, v) in pairs {
            if k == "offerings" {
                offerings.push(Value::from(v));
            } else {
                object.insert(k, Value::from(v));
            }
        }
        object.insert("offerings".into(), Value::Array(offerings));
        for (k, v) in overrides {
            object.insert(k.to_owned(), v);
        }
        serde_json::to_vec(&object).expect("json")
    })
}

fn signup_request() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    const FORM: &str = "application/x-www-form-urlencoded";
    const JSON: &str = "application/json";
    prop_oneof![
        3 => signup_form().prop_map(|b| (FORM, b)),
        3 => signup_json().prop_map(|b| (JSON, b)),
        2 => form_body().prop_map(|b| (FORM, b)),
        2 => json_body().prop_map(|b| (JSON, b)),
        1 => (
            select(CONTENT_TYPES),
            prop_oneof![form_body(), json_body(), signup_form()],
        ),
    ]
}

const SIGNUP_ANSWERS: &[u16] = &[202, 303, 400, 413, 415, 422, 429];

#[test]
fn no_signup_body_gets_a_server_error() {
    let rt = runtime();
    let app = rt.block_on(TestApp::spawn(Backend::Sqlite));
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    check(
        "signup_http",
        160,
        signup_request(),
        |(content_type, body)| {
            rt.block_on(async {
                let mut request = app
                    .http
                    .post(app.url("/subscribe"))
                    .header("user-agent", "sangha-hostile/1.0")
                    .body(body);
                if !content_type.is_empty() {
                    request = request.header("content-type", content_type);
                }
                let response = request.send().await.expect("an answer");
                let status = response.status();
                let location = response
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap_or("?").to_owned());
                let text = response.text().await.expect("a body");
                *seen.lock().unwrap().entry(status.as_u16()).or_default() += 1;
                prop_assert!(
                    SIGNUP_ANSWERS.contains(&status.as_u16()),
                    "{} for a {:?} body: {}",
                    status,
                    content_type,
                    text
                );
                if status == StatusCode::SEE_OTHER {
                    prop_assert_eq!(location.as_deref(), Some("/subscribe/check-inbox"));
                }
                Ok(())
            })
        },
    );
    // The cases reached every kind of answer, not only the first check.
    let seen = seen.into_inner().unwrap();
    eprintln!("signup answers: {seen:?}");
    for status in [202, 303, 400, 415, 422] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    // Every signup that was accepted gets its confirmation email: none is refused by the
    // worker for an address or a name the form let through.
    rt.block_on(async {
        let counts = eventually_async(DEADLINE, || async {
            let counts = app
                .store()
                .delivery_counts(Some(DeliveryKind::Confirmation))
                .await
                .expect("counts");
            (counts.pending == 0).then_some(counts)
        })
        .await
        .expect("the confirmations are delivered");
        assert!(counts.sent > 0, "no signup succeeded: {counts:?}");
        assert_eq!(counts.failed, 0, "{counts:?}");
        app.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Fixed hostile cases, on both databases

backend_tests!(
    control_characters_in_any_field_are_refused_and_nothing_is_stored,
    markup_in_a_name_is_escaped_in_pages_and_emails,
    a_one_megabyte_body_gets_413_on_every_post_route,
    odd_token_paths_get_the_not_found_page,
);

async fn control_characters_in_any_field_are_refused_and_nothing_is_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let good = json!({
        "email": "mira@example.org",
        "name": "Mira",
        "timezone": "Asia/Kathmandu",
        "offerings": ["morning-meditation"],
    });
    for (field, evil) in [
        ("email", json!("mira@example.org\r\nBcc: evil@example.com")),
        ("email", json!("mira\0@example.org")),
        ("name", json!("Mira\r\nBcc: evil@example.com")),
        ("name", json!("Mira\0")),
        ("name", json!("Mi\u{1b}[31mra")),
        ("timezone", json!("Asia/Kathmandu\0")),
        ("timezone", json!("Asia/Kathmandu\r\nX: y")),
        ("offerings", json!(["morning-meditation\0"])),
        (
            "offerings",
            json!(["morning-meditation\r\nBcc: evil@example.com"]),
        ),
    ] {
        let mut body = good.clone();
        body[field] = evil.clone();
        let r = app.post_json("/subscribe", &body).await;
        assert_eq!(
            r.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {evil}"
        );
        let answer: Value = r.json().await.unwrap();
        assert!(answer["fields"][field].is_string(), "{answer}");

        let mut form = String::from("offerings=morning-meditation");
        for key in ["email", "name", "timezone", "offerings"] {
            if key == field {
                let values: Vec<String> = match &evil {
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect(),
                    v => vec![v.as_str().unwrap().to_owned()],
                };
                for v in values {
                    form.push_str(&format!("&{key}={}", urlencode(&v)));
                }
            } else if key != "offerings" {
                form.push_str(&format!(
                    "&{key}={}",
                    urlencode(good[key].as_str().unwrap())
                ));
            }
        }
        let r = app.post_form("/subscribe", &form).await;
        assert_eq!(
            r.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "form {field}: {evil}"
        );
    }
    assert!(
        app.store()
            .list_subscribers(None, None)
            .await
            .unwrap()
            .is_empty()
    );

    // Control characters where nothing is kept (an unknown key, the honeypot) change nothing.
    let mut body = good.clone();
    body["x\0y"] = json!("\0\r\n");
    let r = app.post_json("/subscribe", &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    body["website"] = json!("\0http://spam\r\n");
    body["email"] = json!("bot@example.org");
    let r = app.post_json("/subscribe", &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name.as_deref(), Some("Mira"));

    // The preferences form refuses them too.
    let prefs = app
        .state
        .links()
        .preferences_url(app.link_of(rows[0].id).await)
        .replace(app.config.base_url(), "");
    for body in [
        "name=Mira%0D%0ABcc%3A+evil%40example.com&offerings=morning-meditation",
        "name=Mira%00&offerings=morning-meditation",
        "name=Mira&timezone=UTC%00&offerings=morning-meditation",
        "name=Mira&offerings=morning-meditation%00",
    ] {
        let r = app.post_form(&prefs, body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows[0].name.as_deref(), Some("Mira"));
    assert_eq!(rows[0].timezone.as_deref(), Some("Asia/Kathmandu"));
}

const MARKUP_NAMES: [&str; 2] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
];

/// The raw tag a name would inject, and the escaped text that must appear instead.
fn raw_and_escaped(name: &str) -> (&'static str, String) {
    let raw = if name.contains("<script") {
        "<script>alert"
    } else {
        "<img src=x"
    };
    (raw, handlebars::html_escape(name))
}

fn assert_escaped(what: &str, html: &str, name: &str) {
    let (raw, escaped) = raw_and_escaped(name);
    assert!(!html.contains(raw), "{what} holds a raw {raw}:\n{html}");
    assert!(html.contains(&escaped), "{what} lacks {escaped}:\n{html}");
}

fn html_part(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a parsable message");
    message.body_html(0).expect("an HTML part").into_owned()
}

async fn markup_in_a_name_is_escaped_in_pages_and_emails(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (i, name) in MARKUP_NAMES.into_iter().enumerate() {
        // The form shown again after a mistake keeps what was typed, as text.
        let r = app
            .post_form(
                "/subscribe",
                &format!(
                    "email=nope&name={}&offerings=morning-meditation",
                    urlencode(name)
                ),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_escaped("the signup page", &r.text().await.unwrap(), name);

        // The confirmation email greets them by name, as text.
        let email = format!("markup{i}@example.org");
        let before = app.outbox().len();
        let r = app
            .post_form(
                "/subscribe",
                &format!(
                    "email={}&name={}&offerings=morning-meditation",
                    urlencode(&email),
                    urlencode(name)
                ),
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let messages = app.wait_for_outbox(before + 1).await;
        let confirmation = &messages[before];
        assert_escaped("the confirmation email", &html_part(confirmation), name);
        let path = crate::support::confirm_path_in(confirmation);
        assert_eq!(app.post_form(&path, "").await.status(), StatusCode::OK);

        // The preferences page shows the name in its field, as text.
        let rows = app.store().list_subscribers(None, None).await.unwrap();
        let row = rows.iter().find(|r| r.email == email).expect("subscriber");
        assert_eq!(row.name.as_deref(), Some(name));
        let prefs = app
            .state
            .links()
            .preferences_url(app.link_of(row.id).await)
            .replace(app.config.base_url(), "");
        let r = app.get(&prefs).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_escaped("the preferences page", &r.text().await.unwrap(), name);
    }

    // A send that greets each person by name escapes it in the HTML part.
    let before = app.outbox().len();
    let path = app.write_content(
        "greeting.md",
        "---\nsubject: For {{name}}\n---\nDear **{{name}}**,\n\n[Leave]({{unsubscribe_url}})\n",
    );
    let id = app.schedule_now("morning-meditation", &path);
    let done = app.wait_for_send_done(id).await;
    assert_eq!(done.counts.sent, 2, "{:?}", done.counts);
    let sends = app.outbox().split_off(before);
    assert_eq!(sends.len(), 2);
    for raw in &sends {
        let message = mail_parser::MessageParser::default().parse(raw).unwrap();
        let subject = message.subject().unwrap_or("").to_owned();
        let name = MARKUP_NAMES
            .into_iter()
            .find(|n| subject == format!("For {n}"))
            .unwrap_or_else(|| panic!("subject {subject:?}"));
        assert_escaped("a send", &html_part(raw), name);
    }
}

async fn a_one_megabyte_body_gets_413_on_every_post_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber("big@example.org", &["morning-meditation"])
        .await;
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    let id = rows[0].id;
    let links = app.state.links();
    let base = app.config.base_url();
    let key = key();
    let confirm = format!(
        "/confirm/{}",
        key.sign(&Token {
            purpose: TokenPurpose::Confirm,
            subject: 1,
            scope: 0,
            expires: 0,
            binding: 0,
        })
    );
    let offering = app
        .store()
        .offering_by_slug(&sangha::domain::Slug::parse("morning-meditation").unwrap())
        .await
        .unwrap()
        .unwrap();
    let unsubscribe = links
        .unsubscribe_url(app.link_of(id).await, offering.id)
        .replace(base, "");
    let preferences = links
        .preferences_url(app.link_of(id).await)
        .replace(base, "");
    let erase = format!("{preferences}/erase");
    let megabyte = "x".repeat(1024 * 1024);
    let form = format!("email=a%40example.org&offerings=morning-meditation&name={megabyte}");
    let json = serde_json::to_vec(&json!({"email": "a@example.org", "name": megabyte})).unwrap();
    let routes = [
        "/subscribe",
        confirm.as_str(),
        "/confirm/not-a-token",
        unsubscribe.as_str(),
        "/unsubscribe/not-a-token",
        preferences.as_str(),
        erase.as_str(),
    ];
    for path in routes {
        for (content_type, body) in [
            (
                "application/x-www-form-urlencoded",
                form.clone().into_bytes(),
            ),
            ("application/json", json.clone()),
        ] {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                app.http
                    .post(app.url(path))
                    .header("content-type", content_type)
                    .body(body)
                    .send(),
            )
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(
                r.status(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "{path} ({content_type})"
            );
        }
    }
    // None of them did anything: the person is still subscribed, with their data.
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].subscriptions[0].status,
        sangha::domain::SubscriptionStatus::Confirmed
    );
}

async fn odd_token_paths_get_the_not_found_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = "A".repeat(10_000);
    let tokens = [
        long.as_str(),
        "%00",
        "a%00b",
        "%0D%0ABcc:%20evil@example.com",
        "%E0%A4%B6%E0%A4%95%E0%A5%8D%E0%A4%A4%E0%A4%BF",
        "%F0%9F%98%80",
        "\u{1F600}\u{202E}",
        "..%2F..%2Fetc%2Fpasswd",
        "%25",
        "%",
        "%%30%30",
        "<script>",
        "AQEAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAACm066n4JAdgSsBrC4rH23z",
    ];
    for token in tokens {
        for route in ["/confirm/", "/unsubscribe/", "/preferences/"] {
            let path = format!("{route}{token}");
            let get = app.get(&path).await;
            let status = get.status();
            let page = get.text().await.unwrap();
            assert_eq!(status, StatusCode::NOT_FOUND, "GET {path:.60}: {page:.200}");
            assert!(page.contains("<html"), "GET {path:.60}: not a page");
            let post = app.post_form(&path, "").await;
            assert_eq!(post.status(), StatusCode::NOT_FOUND, "POST {path:.60}");
        }
        let data = app.get(&format!("/preferences/{token}/data")).await;
        assert_eq!(data.status(), StatusCode::NOT_FOUND, "data {token:.60}");
    }
    // A token that is not UTF-8 once decoded is a malformed URL: a client error, not a crash.
    for token in ["%FF%FE", "%C0%AF", "a%80"] {
        for route in ["/confirm/", "/unsubscribe/", "/preferences/"] {
            let status = app.get(&format!("{route}{token}")).await.status();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{route}{token}");
        }
    }
}
