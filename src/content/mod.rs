//! Email content written by the owner: a Markdown file with front matter, or a handlebars pair
//! (`NAME.html.hbs` with front matter, `NAME.txt.hbs` beside it). Content is parsed and fully
//! checked when the owner schedules it, so a typo is an error naming the file and line then,
//! not a failed delivery later.
//!
//! ```text
//! ---                                   front matter: subject (required), preheader,
//! subject: "A breath for {{name}}"      offering, day; quotes optional, `#` comments
//! ---
//! Dear {{name}}, ...                    body: Markdown with handlebars expressions
//! ```
//!
//! The parts: [`front_matter`] reads the `---` block, [`html`] turns Markdown into the HTML
//! template (masking the handlebars expressions), [`text`] writes the plain-text part, and
//! [`check`] renders every template against sample values of the variables.

mod check;
mod front_matter;
mod html;
mod registry;
mod text;

use std::fmt;
use std::path::{Path, PathBuf};

use check::compile;
pub use check::{OfferingVariables, SiteVariables, VARIABLES, Variables, check, sample_context};
use front_matter::FrontMatter;
use html::{Masked, Unescaped};
pub use registry::{Escape, registry};

/// A checked email, ready to be stored with a send. The bodies do not include the layout.
///
/// Built only by [`load`] or [`parse_markdown`]: it remembers where each template came from so
/// that [`check`] can name the line in the owner's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// A one-line handlebars template, rendered without escaping.
    pub subject: String,
    /// The inbox preview line; like the subject, a handlebars template rendered as text.
    pub preheader: Option<String>,
    /// Handlebars template for the HTML body part (render with escaping on).
    pub html: String,
    /// Handlebars template for the plain-text body part (render without escaping).
    pub text: String,
    /// Front matter `day: N`, for course steps.
    pub day: Option<u32>,
    /// Front matter `offering: slug`.
    pub offering: Option<String>,
    /// The file the content was read from (the `.html.hbs` file of a pair).
    pub source: PathBuf,
    origin: Origin,
}

/// Where a content's templates came from, to map handlebars line numbers back to the files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    subject_line: usize,
    preheader_line: Option<usize>,
    /// The bodies exactly as written (Markdown before conversion, or the two .hbs bodies).
    bodies: Vec<SourceBody>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceBody {
    path: PathBuf,
    /// The line of `path` on which `template` starts.
    first_line: usize,
    template: String,
}

/// Why content was refused: the file, the line when known, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl ContentError {
    fn at(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn file(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ContentError {}

/// Reads, parses and checks a content file: `*.md` / `*.markdown`, or `NAME.html.hbs` with
/// `NAME.txt.hbs` beside it.
pub fn load(path: &Path) -> Result<Content, ContentError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = file_name.to_ascii_lowercase();
    let content = if lower.ends_with(".md") || lower.ends_with(".markdown") {
        parse_markdown(path, &read(path)?)?
    } else if let Some(name) = file_name.strip_suffix(".html.hbs") {
        let text_path = path.with_file_name(format!("{name}.txt.hbs"));
        let html_source = read(path)?;
        let text_source = match std::fs::read_to_string(&text_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::file(
                    &text_path,
                    format!(
                        "not found: the text part of `{file_name}` must sit beside it as \
                         `{name}.txt.hbs`"
                    ),
                ));
            }
            Err(e) => return Err(ContentError::file(&text_path, format!("cannot read: {e}"))),
        };
        parse_handlebars_pair(path, &html_source, &text_path, &text_source)?
    } else if file_name.ends_with(".txt.hbs") {
        return Err(ContentError::file(
            path,
            "give the `.html.hbs` file of the pair; its `.txt.hbs` is found beside it",
        ));
    } else {
        return Err(ContentError::file(
            path,
            "unsupported content file: expected `.md`, `.markdown`, or a `NAME.html.hbs` + \
             `NAME.txt.hbs` pair",
        ));
    };
    check(&content)?;
    Ok(content)
}

fn read(path: &Path) -> Result<String, ContentError> {
    std::fs::read_to_string(path).map_err(|e| ContentError::file(path, format!("cannot read: {e}")))
}

/// Parses a Markdown file with front matter into HTML and text templates. Does not render
/// anything: call [`check`] (as [`load`] does) to catch unknown variables.
pub fn parse_markdown(path: &Path, source: &str) -> Result<Content, ContentError> {
    let (front, body, first_line) = FrontMatter::parse_with_body(path, source)?;
    // Masking first: it names the line of an unclosed `{{`, where handlebars names the end.
    let masked = Masked::new(path, first_line, body, Unescaped::Refused)?;
    compile(path, first_line, body)?;
    let html = masked.to_html(path)?;
    let text = masked.to_text(path)?;
    Ok(front.into_content(
        path,
        html,
        text,
        vec![SourceBody {
            path: path.to_owned(),
            first_line,
            template: body.to_owned(),
        }],
    ))
}

/// Parses `NAME.html.hbs` (front matter, then the HTML body template) and `NAME.txt.hbs` (the
/// text body template; front matter there is optional and must agree with the HTML file's).
fn parse_handlebars_pair(
    html_path: &Path,
    html_source: &str,
    text_path: &Path,
    text_source: &str,
) -> Result<Content, ContentError> {
    let (front, html, html_first_line) = FrontMatter::parse_with_body(html_path, html_source)?;
    // Masked only for its checks; `{{{x}}}` is refused: no variable is trusted HTML.
    Masked::new(html_path, html_first_line, html, Unescaped::Refused)?;
    compile(html_path, html_first_line, html)?;

    let (text, text_first_line) = match FrontMatter::parse(text_path, text_source)? {
        Some(text_front) => {
            text_front.agrees_with(&front, text_path)?;
            (&text_source[text_front.body_offset..], text_front.lines + 1)
        }
        None => (text_source, 1),
    };
    if text.trim().is_empty() {
        return Err(ContentError::at(
            text_path,
            text_first_line,
            "the text part is empty",
        ));
    }
    Masked::new(text_path, text_first_line, text, Unescaped::Allowed)?;
    compile(text_path, text_first_line, text)?;

    Ok(front.into_content(
        html_path,
        html.to_owned(),
        text.to_owned(),
        vec![
            SourceBody {
                path: html_path.to_owned(),
                first_line: html_first_line,
                template: html.to_owned(),
            },
            SourceBody {
                path: text_path.to_owned(),
                first_line: text_first_line,
                template: text.to_owned(),
            },
        ],
    ))
}

#[cfg(test)]
mod test_support {
    use std::path::Path;

    use serde_json::Value;

    use super::{Content, ContentError, Escape, parse_markdown, registry};

    /// Parses `source` as an `email.md`, panicking on an error.
    pub fn md(source: &str) -> Content {
        parse_markdown(Path::new("email.md"), source).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The error that parsing `source` as an `email.md` gives, panicking if it parses.
    pub fn md_err(source: &str) -> ContentError {
        match parse_markdown(Path::new("email.md"), source) {
            Ok(content) => panic!("expected an error, got {content:?}"),
            Err(e) => e,
        }
    }

    /// Renders `template` with strict handlebars, escaping HTML or not.
    pub fn render(template: &str, escape_html: bool, context: &Value) -> String {
        let escape = if escape_html {
            Escape::Html
        } else {
            Escape::None
        };
        registry(escape)
            .render_template(template, context)
            .unwrap_or_else(|e| panic!("{e}\n---\n{template}"))
    }

    /// Asserts that no masking placeholder is left in either part of `content`.
    pub fn assert_no_placeholder(content: &Content) {
        for part in [&content.html, &content.text] {
            assert!(!part.contains("hbsph"), "placeholder leaked into:\n{part}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlebars_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("welcome.html.hbs");
        let text = dir.path().join("welcome.txt.hbs");
        std::fs::write(
            &html,
            "---\nsubject: Welcome, {{name}}\noffering: shakti-temple\n---\n<p>Dear {{name}},</p>\n",
        )
        .unwrap();

        let err = load(&html).unwrap_err();
        assert_eq!(err.path, text);
        assert!(err.message.contains("welcome.txt.hbs"), "{err}");

        // `load` refuses the pair, naming `path` and `line`.
        let refused_at = |path: &Path, line: usize| {
            let err = load(&html).unwrap_err();
            assert_eq!((err.path.as_path(), err.line), (path, Some(line)), "{err}");
        };

        std::fs::write(&text, "Dear {{name}},\n\n{{unsubscribe_url}}\n").unwrap();
        let content = load(&html).unwrap();
        assert_eq!(content.subject, "Welcome, {{name}}");
        assert_eq!(content.offering.as_deref(), Some("shakti-temple"));
        assert_eq!(content.html, "<p>Dear {{name}},</p>\n");
        assert_eq!(content.text, "Dear {{name}},\n\n{{unsubscribe_url}}\n");
        assert_eq!(content.source, html);

        // An unknown variable in the text file names that file and its line.
        std::fs::write(
            &text,
            "---\nsubject: Welcome, {{name}}\n---\nDear {{nmae}},\n",
        )
        .unwrap();
        refused_at(&text, 4);

        // Front matter in the text file must agree with the HTML file's.
        std::fs::write(&text, "---\nday: 2\n---\nDear {{name}},\n").unwrap();
        refused_at(&text, 2);

        // And one in the HTML file is counted after its front matter.
        std::fs::write(&text, "Dear {{name}}\n").unwrap();
        std::fs::write(&html, "---\nsubject: Hi\n---\n<p>\n{{nmae}}</p>\n").unwrap();
        refused_at(&html, 5);
    }

    #[test]
    fn load_reads_markdown_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("day-1.md");
        std::fs::write(
            &path,
            "---\nsubject: Day one\nday: 1\n---\nBreathe, {{name}}.\n",
        )
        .unwrap();
        let content = load(&path).unwrap();
        assert_eq!(content.day, Some(1));
        assert_eq!(content.text, "Breathe, {{name}}.\n");

        std::fs::write(&path, "---\nsubject: Day one\n---\nBreathe, {{nmae}}.\n").unwrap();
        assert_eq!(load(&path).unwrap_err().line, Some(4));

        let other = dir.path().join("notes.txt");
        std::fs::write(&other, "hello").unwrap();
        assert!(load(&other).unwrap_err().message.contains("unsupported"));
        assert!(
            load(&dir.path().join("missing.md"))
                .unwrap_err()
                .message
                .contains("cannot read")
        );
    }
}
