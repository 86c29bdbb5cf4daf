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
//! # The placeholder trick
//!
//! A Markdown body is also a handlebars template, and the two languages must not see each
//! other's syntax. Values typed by subscribers (`name`) must be HTML-escaped in the HTML part,
//! while HTML the owner wrote in the Markdown is trusted and passes through. So the HTML part
//! is made in three steps:
//!
//! ```text
//!  Dear {{name}}, [leave]({{unsubscribe_url}})        the owner's Markdown
//!        │ mask: each {{…}} becomes an opaque alphanumeric word
//!  Dear hbsph0x7q0z, [leave](hbsph0x7q1z)
//!        │ pulldown-cmark (leaves alphanumerics alone, even in link URLs)
//!  <p>Dear hbsph0x7q0z, <a href="hbsph0x7q1z">leave</a></p>
//!        │ restore the expressions verbatim
//!  <p>Dear {{name}}, <a href="{{unsubscribe_url}}">leave</a></p>
//! ```
//!
//! The result is a handlebars template that the escaping HTML registry renders at send time:
//! the subscriber's values are escaped there, once, wherever they appear. Markdown never sees a
//! value, so a name like `*Shakti*` stays literal. Triple-stash `{{{x}}}` (and `{{& x}}`) would
//! bypass that escaping and are refused. The placeholder prefix is chosen so that it does not
//! occur in the source. The plain-text part is made from the same masked Markdown by walking
//! pulldown-cmark's events.
//!
//! A paragraph made only of block tags (`{{#if name}}`, `{{else}}`, `{{/if}}`) is written as
//! bare lines, not wrapped in `<p>`, so handlebars' standalone-line rule removes those lines
//! and a false condition leaves no empty paragraph behind.

use std::fmt;
use std::path::{Path, PathBuf};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, TemplateError,
};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde_json::{Value, json};

use crate::domain::Slug;

/// The top-level variables that content may use; the sending code puts all of them in the
/// handlebars context of every recipient (see [`sample_context`] for their shape).
pub const VARIABLES: &[&str] = &[
    "name",
    "email",
    "offering",
    "date",
    "unsubscribe_url",
    "preferences_url",
    "site",
];

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
    let front = FrontMatter::parse_required(path, source)?;
    let body = &source[front.body_offset..];
    let first_line = front.lines + 1;
    if body.trim().is_empty() {
        return Err(ContentError::at(
            path,
            front.lines,
            "the email has no body after the front matter",
        ));
    }
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
    let front = FrontMatter::parse_required(html_path, html_source)?;
    let html = &html_source[front.body_offset..];
    let html_first_line = front.lines + 1;
    if html.trim().is_empty() {
        return Err(ContentError::at(
            html_path,
            front.lines,
            "the email has no body after the front matter",
        ));
    }
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

/// A context with every variable of [`VARIABLES`] filled with sample values, for checks and
/// previews. The sending code builds the same shape for each recipient.
pub fn sample_context() -> Value {
    json!({
        "name": "Asha",
        "email": "asha@example.com",
        "offering": {
            "name": "Morning Meditation",
            "slug": "morning-meditation",
            "description": "A short guided meditation to begin the day.",
        },
        "date": "1 December 2026",
        "unsubscribe_url": "http://localhost:3000/unsubscribe/sample-token",
        "preferences_url": "http://localhost:3000/preferences/sample-token",
        "site": {
            "name": "Shakti Temple",
            "base_url": "http://localhost:3000",
        },
    })
}

/// Renders every template of `content` in strict mode against [`sample_context`]. An unknown
/// variable or a handlebars syntax error is reported at its line in the source file (front
/// matter lines counted).
pub fn check(content: &Content) -> Result<(), ContentError> {
    let origin = &content.origin;
    let at_line = |line: usize, what: &str, template: &str| {
        render_sample(template, false).map_err(|(_, message)| {
            ContentError::at(&content.source, line, format!("{what}: {message}"))
        })
    };
    let subject = at_line(origin.subject_line, "subject", &content.subject)?;
    if subject.trim().is_empty() {
        return Err(ContentError::at(
            &content.source,
            origin.subject_line,
            "the subject renders as an empty line",
        ));
    }
    if let Some(preheader) = &content.preheader {
        let line = origin.preheader_line.unwrap_or(origin.subject_line);
        at_line(line, "preheader", preheader)?;
    }
    for body in &origin.bodies {
        render_sample(&body.template, false).map_err(|(line, message)| ContentError {
            path: body.path.clone(),
            line: line.map(|l| body.first_line + l - 1),
            message,
        })?;
    }
    // The bodies passed, so these only fail if conversion itself went wrong.
    for (what, template, escape) in [
        ("HTML", &content.html, true),
        ("text", &content.text, false),
    ] {
        render_sample(template, escape).map_err(|(_, message)| {
            ContentError::file(
                &content.source,
                format!("the {what} part made from this file does not render: {message}"),
            )
        })?;
    }
    Ok(())
}

/// Compiles and renders `template` in strict mode with the sample context. On failure gives
/// the line within the template (when handlebars knows it) and a message without position.
fn render_sample(template: &str, escape_html: bool) -> Result<String, (Option<usize>, String)> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    if !escape_html {
        registry.register_escape_fn(handlebars::no_escape);
    }
    registry.register_helper("if", Box::new(BothBranches));
    registry.register_helper("unless", Box::new(BothBranches));
    registry
        .register_template_string("content", template)
        .map_err(template_error)?;
    registry
        .render("content", &sample_context())
        .map_err(|e| (e.line_no, render_message(&e)))
}

/// `if` and `unless` for checking: strict mode lets `{{#if nmae}}` pass as false, and the
/// sample context takes only one branch. This one requires the condition to exist and renders
/// both branches, so a mistake in either is found.
struct BothBranches;

impl HelperDef for BothBranches {
    fn call<'reg: 'rc, 'rc>(
        &self,
        helper: &Helper<'rc>,
        registry: &'reg Handlebars<'reg>,
        context: &'rc Context,
        render: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let condition = helper
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("if", 0))?;
        if condition.is_value_missing() {
            let path = condition.relative_path().cloned();
            return Err(RenderErrorReason::MissingVariable(path).into());
        }
        for branch in [helper.template(), helper.inverse()].into_iter().flatten() {
            branch.render(registry, context, render, out)?;
        }
        Ok(())
    }
}

/// Checks handlebars syntax only, reporting the line in `path`.
fn compile(path: &Path, first_line: usize, template: &str) -> Result<(), ContentError> {
    handlebars::Template::compile(template).map_err(|e| {
        let (line, message) = template_error(e);
        ContentError {
            path: path.to_owned(),
            line: line.map(|l| first_line + l - 1),
            message,
        }
    })?;
    Ok(())
}

fn template_error(e: TemplateError) -> (Option<usize>, String) {
    (
        e.pos().map(|(line, _)| line),
        format!("handlebars syntax: {}", e.reason()),
    )
}

fn render_message(e: &RenderError) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!(
            "unknown variable `{path}` (content may use: {})",
            VARIABLES.join(", ")
        ),
        RenderErrorReason::TemplateError(e) => format!("handlebars syntax: {}", e.reason()),
        reason => reason.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Front matter

/// The `---` block at the top of a content file. Each value keeps its line for error messages.
#[derive(Debug, Default)]
struct FrontMatter {
    subject: Option<(String, usize)>,
    preheader: Option<(String, usize)>,
    offering: Option<(String, usize)>,
    day: Option<(u32, usize)>,
    /// Lines up to and including the closing `---`; the body starts on the next line.
    lines: usize,
    /// Byte offset of the body in the source.
    body_offset: usize,
}

const KEYS: &str = "subject, preheader, offering or day";

impl FrontMatter {
    /// Like [`FrontMatter::parse`], but front matter with a subject must be there.
    fn parse_required(path: &Path, source: &str) -> Result<Self, ContentError> {
        let front = Self::parse(path, source)?.ok_or_else(|| {
            ContentError::at(
                path,
                1,
                "front matter with a subject is required: start the file with a `---` line, \
                 then `subject: ...`, then `---`",
            )
        })?;
        if front.subject.is_none() {
            return Err(ContentError::at(
                path,
                front.lines,
                "the front matter has no `subject:` line (add one before this closing `---`)",
            ));
        }
        Ok(front)
    }

    /// Reads the front matter if the source starts with a `---` line; `None` if it does not.
    fn parse(path: &Path, source: &str) -> Result<Option<Self>, ContentError> {
        let source_start = source.len() - source.trim_start_matches('\u{feff}').len();
        let mut lines = source[source_start..].split_inclusive('\n');
        let mut offset = match lines.next() {
            Some(first) if first.trim_end() == "---" => source_start + first.len(),
            _ => return Ok(None),
        };
        let mut front = FrontMatter::default();
        for (index, raw) in lines.enumerate() {
            let number = index + 2;
            offset += raw.len();
            let line = raw.trim();
            if raw.trim_end() == "---" {
                front.lines = number;
                front.body_offset = offset;
                return Ok(Some(front));
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            front
                .set(line, number)
                .map_err(|m| ContentError::at(path, number, m))?;
        }
        Err(ContentError::at(
            path,
            1,
            "the front matter that starts here is never closed: add a `---` line after it",
        ))
    }

    /// Applies the `key: value` line numbered `number`.
    fn set(&mut self, line: &str, number: usize) -> Result<(), String> {
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("expected `key: value`, found `{line}`"));
        };
        let key = key.trim();
        let value = unquote(value.trim())?;
        let taken = |slot_line: Option<usize>| match slot_line {
            Some(first) => Err(format!("`{key}` is given twice (first on line {first})")),
            None => Ok(()),
        };
        match key {
            "subject" => {
                taken(self.subject.as_ref().map(|s| s.1))?;
                if value.trim().is_empty() {
                    return Err("`subject` is empty".into());
                }
                self.subject = Some((value.to_owned(), number));
            }
            "preheader" => {
                taken(self.preheader.as_ref().map(|s| s.1))?;
                if value.trim().is_empty() {
                    return Err("`preheader` is empty: write one or remove the line".into());
                }
                self.preheader = Some((value.to_owned(), number));
            }
            "offering" => {
                taken(self.offering.as_ref().map(|s| s.1))?;
                let slug = Slug::parse(value)?;
                self.offering = Some((slug.as_str().to_owned(), number));
            }
            "day" => {
                taken(self.day.as_ref().map(|s| s.1))?;
                let bad =
                    || format!("`day` must be a whole number of days (0 or more), not `{value}`");
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                self.day = Some((value.parse().map_err(|_| bad())?, number));
            }
            "" => return Err(format!("expected `key: value`, found `{line}`")),
            other => return Err(format!("unknown key `{other}`; expected {KEYS}")),
        }
        Ok(())
    }

    /// Front matter in a `.txt.hbs` file may repeat keys of the `.html.hbs` file, never differ.
    fn agrees_with(&self, html: &FrontMatter, text_path: &Path) -> Result<(), ContentError> {
        fn same<T: PartialEq>(
            text: &Option<(T, usize)>,
            html: &Option<(T, usize)>,
            key: &str,
            path: &Path,
        ) -> Result<(), ContentError> {
            match (text, html) {
                (Some((t, line)), h) if h.as_ref().map(|h| &h.0) != Some(t) => {
                    Err(ContentError::at(
                        path,
                        *line,
                        format!(
                            "`{key}` differs from the `.html.hbs` file; front matter belongs \
                             there (the text file may leave it out)"
                        ),
                    ))
                }
                _ => Ok(()),
            }
        }
        same(&self.subject, &html.subject, "subject", text_path)?;
        same(&self.preheader, &html.preheader, "preheader", text_path)?;
        same(&self.offering, &html.offering, "offering", text_path)?;
        same(&self.day, &html.day, "day", text_path)
    }

    fn into_content(
        self,
        path: &Path,
        html: String,
        text: String,
        bodies: Vec<SourceBody>,
    ) -> Content {
        let (subject, subject_line) = self.subject.expect("checked by parse_required");
        Content {
            subject,
            preheader: self.preheader.as_ref().map(|p| p.0.clone()),
            html,
            text,
            day: self.day.map(|d| d.0),
            offering: self.offering.map(|o| o.0),
            source: path.to_owned(),
            origin: Origin {
                subject_line,
                preheader_line: self.preheader.map(|p| p.1),
                bodies,
            },
        }
    }
}

/// Removes one pair of matching single or double quotes. There are no escape sequences: a
/// value that contains one kind of quote is written inside the other kind.
fn unquote(value: &str) -> Result<&str, String> {
    let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(value);
    };
    let inner = value
        .strip_prefix(quote)
        .and_then(|v| v.strip_suffix(quote))
        .ok_or_else(|| format!("the quote {quote} is not closed at the end of the line"))?;
    if inner.contains(quote) {
        return Err(format!(
            "a value in {quote}quotes{quote} cannot contain {quote}; use the other kind of quotes"
        ));
    }
    Ok(inner)
}

// ---------------------------------------------------------------------------------------------
// Masking handlebars expressions from Markdown

/// A Markdown body whose handlebars expressions are replaced by placeholders.
struct Masked {
    text: String,
    /// Does not occur in the source; a placeholder is `{prefix}{index}z`.
    prefix: String,
    expressions: Vec<Expression>,
}

struct Expression {
    /// Exactly as written, braces included.
    source: String,
    /// A block tag, `{{else}}` or a comment: renders nothing by itself.
    control: bool,
}

impl Masked {
    /// Finds the handlebars expressions of `body` (which starts on line `first_line` of
    /// `path`) and replaces each by a placeholder. Refuses an unclosed `{{` or block, and
    /// triple-stash unless `unescaped` allows it.
    fn new(
        path: &Path,
        first_line: usize,
        body: &str,
        unescaped: Unescaped,
    ) -> Result<Self, ContentError> {
        let mut prefix = String::from("hbsph0x7q");
        while body.contains(&prefix) {
            prefix.push('q');
        }
        let mut masked = Masked {
            text: String::with_capacity(body.len()),
            prefix,
            expressions: Vec::new(),
        };
        // Open blocks (`{{#if x}}`): name and line, to name an unclosed one where it opens.
        let mut open: Vec<(&str, usize)> = Vec::new();
        let mut copied = 0;
        let mut line = first_line;
        let mut counted = 0;
        while let Some(found) = body[copied..].find("{{") {
            let start = copied + found;
            line += body[counted..start].matches('\n').count();
            counted = start;
            let error = |message: String| ContentError::at(path, line, message);

            // `\{{` is handlebars' escape for a literal `{{`: keep the three characters whole.
            if body[..start].ends_with('\\') {
                masked.text.push_str(&body[copied..start - 1]);
                masked.push("\\{{", false);
                copied = start + 2;
                continue;
            }
            let inner = body[start + 2..].trim_start_matches('~').trim_start();
            if unescaped == Unescaped::Refused && inner.starts_with(['{', '&']) {
                return Err(error(
                    "`{{{…}}}` and `{{& …}}` insert a value without HTML escaping and are not \
                     allowed in content; write `{{…}}`"
                        .into(),
                ));
            }
            let end = expression_end(body, start)
                .ok_or_else(|| error("this `{{` is never closed by `}}`".into()))?;
            match block_tag(inner) {
                Some(BlockTag::Open(name)) => open.push((name, line)),
                Some(BlockTag::Close(name)) => match open.pop() {
                    Some((opened, _)) if opened == name => {}
                    Some((opened, opened_line)) => {
                        return Err(error(format!(
                            "`{{{{/{name}}}}}` does not match `{{{{#{opened}}}}}` opened on line \
                             {opened_line}; close that one first with `{{{{/{opened}}}}}`"
                        )));
                    }
                    None => {
                        return Err(error(format!(
                            "`{{{{/{name}}}}}` closes a block that was never opened"
                        )));
                    }
                },
                Some(BlockTag::Middle) | None => {}
            }
            let control = block_tag(inner).is_some() || inner.starts_with('!');
            masked.text.push_str(&body[copied..start]);
            masked.push(&body[start..end], control);
            copied = end;
        }
        if let Some((name, opened_line)) = open.pop() {
            return Err(ContentError::at(
                path,
                opened_line,
                format!("`{{{{#{name}}}}}` is never closed by `{{{{/{name}}}}}`"),
            ));
        }
        masked.text.push_str(&body[copied..]);
        Ok(masked)
    }

    fn push(&mut self, source: &str, control: bool) {
        let index = self.expressions.len();
        self.text.push_str(&format!("{}{index}z", self.prefix));
        self.expressions.push(Expression {
            source: source.to_owned(),
            control,
        });
    }

    /// The expression a placeholder word stands for.
    fn expression(&self, word: &str) -> Option<&Expression> {
        let index = word.strip_prefix(&self.prefix)?.strip_suffix('z')?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.expressions.get(index.parse::<usize>().ok()?)
    }

    /// Puts the original expressions back in place of the placeholders.
    fn restore(&self, rendered: &str, path: &Path) -> Result<String, ContentError> {
        let mut out = String::with_capacity(rendered.len());
        let mut rest = rendered;
        while let Some(found) = rest.find(&self.prefix) {
            out.push_str(&rest[..found]);
            let after = &rest[found + self.prefix.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let index = after[..digits].parse::<usize>().ok();
            match (
                index.and_then(|i| self.expressions.get(i)),
                after[digits..].starts_with('z'),
            ) {
                (Some(expression), true) => {
                    out.push_str(&expression.source);
                    rest = &after[digits + 1..];
                }
                _ => {
                    return Err(ContentError::file(
                        path,
                        "internal error: a handlebars expression was altered by the Markdown \
                         conversion",
                    ));
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Like [`Masked::restore`], for comparing and measuring: a damaged placeholder stays.
    fn restore_lossy(&self, rendered: &str) -> String {
        self.restore(rendered, Path::new(""))
            .unwrap_or_else(|_| rendered.to_owned())
    }

    /// If the paragraph starting at `events[start]` holds nothing but block tags
    /// (`{{#if x}}`, `{{/if}}`), returns their placeholders and the index of its end.
    fn control_paragraph(&self, events: &[Event], start: usize) -> Option<(Vec<String>, usize)> {
        let mut words = Vec::new();
        for (offset, event) in events[start + 1..].iter().enumerate() {
            match event {
                Event::End(TagEnd::Paragraph) => {
                    return (!words.is_empty()).then_some((words, start + 1 + offset));
                }
                Event::Text(text) => {
                    for word in text.split_whitespace() {
                        if !self.expression(word).is_some_and(|e| e.control) {
                            return None;
                        }
                        words.push(word.to_owned());
                    }
                }
                Event::SoftBreak => {}
                _ => return None,
            }
        }
        None
    }

    fn events(&self) -> Vec<Event<'_>> {
        let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
        Parser::new_ext(&self.text, options).collect()
    }

    /// The HTML body template.
    fn to_html(&self, path: &Path) -> Result<String, ContentError> {
        let events = self.events();
        let mut lifted = Vec::with_capacity(events.len());
        let mut i = 0;
        while i < events.len() {
            if let Event::Start(Tag::Paragraph) = events[i]
                && let Some((words, end)) = self.control_paragraph(&events, i)
            {
                lifted.push(Event::Html(format!("{}\n", words.join("\n")).into()));
                i = end + 1;
                continue;
            }
            lifted.push(events[i].clone());
            i += 1;
        }
        let mut html = String::new();
        pulldown_cmark::html::push_html(&mut html, lifted.into_iter());
        // Braces that Markdown unescaped (`\{\{`) must not become expressions.
        let html = html.replace("{{", "&#123;{");
        self.restore(&html, path)
    }

    /// The plain-text body template.
    fn to_text(&self, path: &Path) -> Result<String, ContentError> {
        let events = self.events();
        let mut writer = TextWriter::new(self);
        let mut i = 0;
        while i < events.len() {
            if let Event::Start(Tag::Paragraph) = events[i]
                && let Some((words, end)) = self.control_paragraph(&events, i)
            {
                writer.controls.extend(words);
                i = end + 1;
                continue;
            }
            writer.event(&events[i]);
            i += 1;
        }
        let text = writer.finish().replace("{{", "\\{{");
        self.restore(&text, path)
    }
}

/// Whether triple-stash `{{{x}}}` is allowed: never where the output is HTML.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unescaped {
    Refused,
    Allowed,
}

/// The block structure of an expression, given its inside after `{{` and `~`.
#[derive(Debug, PartialEq)]
enum BlockTag<'a> {
    /// `{{#if x}}`, `{{#> partial}}`, `{{^x}}`: opens a block named `if`, `partial`, `x`.
    Open(&'a str),
    /// `{{else}}`, `{{else if y}}`, `{{^}}`.
    Middle,
    /// `{{/if}}`.
    Close(&'a str),
}

fn block_tag(inner: &str) -> Option<BlockTag<'_>> {
    let first_word = |rest: &str| -> usize {
        rest.find(|c: char| c.is_whitespace() || matches!(c, '}' | '~' | '('))
            .unwrap_or(rest.len())
    };
    if let Some(rest) = inner.strip_prefix('#') {
        let rest = rest.trim_start_matches(['>', '*']).trim_start();
        return Some(BlockTag::Open(&rest[..first_word(rest)]));
    }
    if let Some(rest) = inner.strip_prefix('/') {
        let rest = rest.trim_start();
        return Some(BlockTag::Close(&rest[..first_word(rest)]));
    }
    if let Some(rest) = inner.strip_prefix('^') {
        let rest = rest.trim_start();
        let word = &rest[..first_word(rest)];
        return Some(if word.is_empty() {
            BlockTag::Middle
        } else {
            BlockTag::Open(word)
        });
    }
    let rest = inner.strip_prefix("else")?;
    (!rest.starts_with(|c: char| c.is_alphanumeric() || "-_$:.".contains(c)))
        .then_some(BlockTag::Middle)
}

/// The end (exclusive) of the handlebars expression that starts at `start`, or `None` if it
/// is not closed. Skips string literals, so `{{eq x "}}"}}` is one expression.
fn expression_end(body: &str, start: usize) -> Option<usize> {
    let rest = &body[start..];
    if rest.starts_with("{{!--") {
        return rest.find("--}}").map(|i| start + i + 4);
    }
    if rest.starts_with("{{!") {
        return rest.find("}}").map(|i| start + i + 2);
    }
    let bytes = rest.as_bytes();
    let mut i = 2;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(start + i + 2),
            _ => i += 1,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Markdown events → plain text

/// Writes Markdown events as readable plain text. Blocks are separated by a blank line;
/// nothing is wrapped.
struct TextWriter<'m> {
    masked: &'m Masked,
    out: String,
    /// Prefixes of the open containers, outermost first.
    prefixes: Vec<LinePrefix>,
    /// Open containers, to know a paragraph's parent.
    containers: Vec<Container>,
    lists: Vec<ListState>,
    /// Nothing has been written on the current line yet, not even its prefix.
    mid_line: bool,
    /// A block ended: the next block starts after a blank line.
    blank_pending: bool,
    /// Block tags of control-only paragraphs, written on their own lines before the next block.
    controls: Vec<String>,
    /// Open links: destination and where their text starts in `out`.
    links: Vec<(String, usize)>,
    /// Where the current heading's text starts in `out`.
    heading: Option<(HeadingLevel, usize)>,
    /// Raw text of the HTML block being read.
    html_block: Option<String>,
    table_cell: usize,
    table_head: Option<usize>,
}

struct LinePrefix {
    first: String,
    rest: String,
    first_used: bool,
}

#[derive(PartialEq)]
enum Container {
    Quote,
    List,
    Item,
    Other,
}

struct ListState {
    next: Option<u64>,
    loose: bool,
}

impl<'m> TextWriter<'m> {
    fn new(masked: &'m Masked) -> Self {
        Self {
            masked,
            out: String::new(),
            prefixes: Vec::new(),
            containers: Vec::new(),
            lists: Vec::new(),
            mid_line: false,
            blank_pending: false,
            controls: Vec::new(),
            links: Vec::new(),
            heading: None,
            html_block: None,
            table_cell: 0,
            table_head: None,
        }
    }

    fn event(&mut self, event: &Event) {
        if let Some(block) = &mut self.html_block {
            match event {
                Event::Html(html) => block.push_str(html),
                Event::End(TagEnd::HtmlBlock) => {
                    let lines = html_to_lines(&self.html_block.take().unwrap_or_default());
                    if !lines.is_empty() {
                        self.start_block();
                        self.write(&lines.join("\n"));
                        self.end_block();
                    }
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) | Event::Code(text) => self.write(text),
            Event::InlineMath(text) | Event::DisplayMath(text) => self.write(text),
            Event::SoftBreak | Event::HardBreak => self.newline(),
            Event::Rule => {
                self.start_block();
                self.write("---");
                self.end_block();
            }
            Event::Html(html) | Event::InlineHtml(html) => self.inline_html(html),
            Event::FootnoteReference(name) => self.write(&format!("[{name}]")),
            Event::TaskListMarker(done) => self.write(if *done { "[x] " } else { "[ ] " }),
        }
    }

    fn start(&mut self, tag: &Tag) {
        match tag {
            Tag::Paragraph => {
                if self.containers.last() == Some(&Container::Item)
                    && let Some(list) = self.lists.last_mut()
                {
                    list.loose = true;
                }
                self.start_block();
            }
            Tag::Heading { level, .. } => {
                self.start_block();
                self.start_line();
                self.heading = Some((*level, self.out.len()));
            }
            Tag::BlockQuote(_) => {
                self.start_block();
                self.push_prefix("> ", "> ", Container::Quote);
            }
            Tag::CodeBlock(_) => {
                self.start_block();
                self.push_prefix("    ", "    ", Container::Other);
            }
            Tag::HtmlBlock => self.html_block = Some(String::new()),
            Tag::List(first) => {
                self.start_block();
                self.lists.push(ListState {
                    next: *first,
                    loose: false,
                });
                self.containers.push(Container::List);
            }
            Tag::Item => {
                self.end_line();
                if self.blank_pending && self.lists.last().is_some_and(|l| l.loose) {
                    self.blank_line();
                }
                self.blank_pending = false;
                let marker = match self.lists.last_mut().and_then(|l| l.next.as_mut()) {
                    Some(n) => {
                        *n += 1;
                        format!("{}. ", *n - 1)
                    }
                    None => "- ".to_owned(),
                };
                let indent = " ".repeat(marker.len());
                self.push_prefix(&marker, &indent, Container::Item);
            }
            Tag::Table(_) => {
                self.start_block();
                self.containers.push(Container::Other);
            }
            Tag::TableHead | Tag::TableRow => {
                self.end_line();
                self.table_cell = 0;
                self.start_line();
                if matches!(tag, Tag::TableHead) {
                    self.table_head = Some(self.out.len());
                }
            }
            Tag::TableCell => {
                if self.table_cell > 0 {
                    self.write(" | ");
                }
                self.table_cell += 1;
            }
            Tag::Strikethrough => self.write("~~"),
            Tag::Link { dest_url, .. } => {
                self.start_line();
                self.links.push((dest_url.to_string(), self.out.len()));
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: &TagEnd) {
        match tag {
            TagEnd::Paragraph => self.end_block(),
            TagEnd::Heading(_) => {
                if let Some((level, start)) = self.heading.take() {
                    let width = self.width(start);
                    if width > 0 {
                        self.newline();
                        let mark = if level == HeadingLevel::H1 { "=" } else { "-" };
                        self.write(&mark.repeat(width));
                    }
                }
                self.end_block();
            }
            TagEnd::BlockQuote(_) | TagEnd::CodeBlock => {
                self.end_line();
                self.pop_prefix();
                self.end_block();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                self.containers.pop();
                self.end_block();
            }
            TagEnd::Item => {
                // An empty item still shows its marker.
                if self.prefixes.last().is_some_and(|p| !p.first_used) {
                    self.start_line();
                }
                self.end_line();
                self.pop_prefix();
            }
            TagEnd::Table => {
                self.containers.pop();
                self.end_block();
            }
            TagEnd::TableHead => {
                if let Some(start) = self.table_head.take() {
                    let width = self.width(start);
                    self.newline();
                    self.write(&"-".repeat(width));
                }
                self.end_line();
            }
            TagEnd::TableRow => self.end_line(),
            TagEnd::Strikethrough => self.write("~~"),
            TagEnd::Link => self.end_link(),
            _ => {}
        }
    }

    /// How wide the text written since `start` looks, counting each placeholder as the
    /// expression it stands for.
    fn width(&self, start: usize) -> usize {
        let line = &self.out[start..];
        let line = line.rsplit('\n').next().unwrap_or(line);
        self.masked.restore_lossy(line).trim().chars().count()
    }

    fn end_link(&mut self) {
        let Some((dest, start)) = self.links.pop() else {
            return;
        };
        // Compare what the reader will see: two `{{unsubscribe_url}}` are two placeholders.
        let text = self.masked.restore_lossy(&self.out[start..]);
        let shown = self.masked.restore_lossy(&dest);
        if dest.is_empty() || text == shown || shown.strip_prefix("mailto:") == Some(&text) {
            return;
        }
        if text.trim().is_empty() {
            self.write(&dest);
        } else {
            self.write(&format!(" <{dest}>"));
        }
    }

    /// Inline HTML is dropped, except that a link keeps its URL and `<br>` breaks the line.
    fn inline_html(&mut self, html: &str) {
        let mut rest = html;
        while let Some(found) = rest.find('<') {
            rest = &rest[found..];
            let Some((tag, len)) = HtmlTag::parse(rest) else {
                rest = &rest[1..];
                continue;
            };
            match (tag.name.as_str(), tag.closing) {
                ("a", false) => {
                    self.start_line();
                    self.links
                        .push((tag.href.unwrap_or_default(), self.out.len()));
                }
                ("a", true) => self.end_link(),
                ("br", _) => self.newline(),
                _ => {}
            }
            rest = &rest[len..];
        }
    }

    fn push_prefix(&mut self, first: &str, rest: &str, container: Container) {
        self.prefixes.push(LinePrefix {
            first: first.to_owned(),
            rest: rest.to_owned(),
            first_used: false,
        });
        self.containers.push(container);
    }

    fn pop_prefix(&mut self) {
        self.prefixes.pop();
        self.containers.pop();
    }

    /// Writes the prefixes of the current line, once.
    fn start_line(&mut self) {
        if self.mid_line {
            return;
        }
        for prefix in &mut self.prefixes {
            if prefix.first_used {
                self.out.push_str(&prefix.rest);
            } else {
                self.out.push_str(&prefix.first);
                prefix.first_used = true;
            }
        }
        self.mid_line = true;
    }

    fn newline(&mut self) {
        self.out.push('\n');
        self.mid_line = false;
    }

    fn end_line(&mut self) {
        if self.mid_line {
            self.newline();
        }
    }

    fn blank_line(&mut self) {
        for prefix in &self.prefixes {
            self.out.push_str(&prefix.rest);
        }
        self.newline();
    }

    fn write(&mut self, text: &str) {
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            if !part.is_empty() {
                self.start_line();
                self.out.push_str(part);
            }
        }
    }

    fn start_block(&mut self) {
        self.end_line();
        if self.blank_pending && !self.out.is_empty() {
            self.blank_line();
        }
        self.blank_pending = false;
        for control in std::mem::take(&mut self.controls) {
            self.write(&control);
            self.newline();
        }
    }

    fn end_block(&mut self) {
        self.end_line();
        self.blank_pending = true;
    }

    /// The text with trailing spaces removed from every line and one final newline. Block tags
    /// after the last block close it directly, with no blank line before them.
    fn finish(mut self) -> String {
        self.end_line();
        for control in std::mem::take(&mut self.controls) {
            self.write(&control);
            self.newline();
        }
        let mut text: String = self
            .out
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n");
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        text.push('\n');
        text
    }
}

/// An HTML tag as far as the text part cares: its name, whether it closes, and a link target.
struct HtmlTag {
    name: String,
    closing: bool,
    href: Option<String>,
}

impl HtmlTag {
    /// Parses the tag or comment at the start of `s` (which starts with `<`). Returns the tag
    /// and its length, or `None` if `<` does not start a tag.
    fn parse(s: &str) -> Option<(HtmlTag, usize)> {
        if s.starts_with("<!--") {
            let len = s.find("-->").map_or(s.len(), |i| i + 3);
            let comment = HtmlTag {
                name: "!--".into(),
                closing: false,
                href: None,
            };
            return Some((comment, len));
        }
        let after = &s[1..];
        let closing = after.starts_with('/');
        let body = after.trim_start_matches('/');
        if !body.starts_with(|c: char| c.is_ascii_alphabetic() || c == '!' || c == '?') {
            return None;
        }
        // Find the closing `>`, outside quoted attribute values.
        let mut quote = None;
        let end = s.char_indices().skip(1).find_map(|(i, c)| {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => return Some(i),
                _ => {}
            }
            None
        })?;
        let inside = &s[1..end];
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let href = attribute(inside, "href");
        Some((
            HtmlTag {
                name,
                closing,
                href,
            },
            end + 1,
        ))
    }
}

/// The value of attribute `name` in the inside of a tag, quoted or not.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let at = from + found;
        from = at + name.len();
        let boundary = lower[..at].ends_with(|c: char| c.is_whitespace());
        let rest = lower[from..].trim_start();
        if !boundary || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or("").to_owned(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .to_owned(),
        });
    }
    None
}

/// Turns an HTML block into text lines: tags and comments dropped, block tags and `<br>`
/// break lines, links keep their URL, whitespace collapsed as a browser would.
fn html_to_lines(html: &str) -> Vec<String> {
    const BREAKS: &[&str] = &[
        "br",
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "tr",
        "table",
        "ul",
        "ol",
        "blockquote",
        "hr",
        "section",
        "article",
        "header",
        "footer",
        "center",
    ];
    let mut lines = vec![String::new()];
    let mut links: Vec<(String, usize, usize)> = Vec::new();
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        if c == '<'
            && let Some((tag, len)) = HtmlTag::parse(rest)
        {
            rest = &rest[len..];
            if matches!(tag.name.as_str(), "style" | "script") && !tag.closing {
                let close = format!("</{}", tag.name);
                let skip = rest.to_ascii_lowercase().find(&close).unwrap_or(rest.len());
                rest = &rest[skip..];
            } else if tag.name == "a" && !tag.closing {
                let line = lines.len() - 1;
                links.push((tag.href.unwrap_or_default(), line, lines[line].len()));
            } else if tag.name == "a" {
                if let Some((href, line, start)) = links.pop() {
                    let last = lines.len() - 1;
                    let current = &mut lines[last];
                    let text = if line == last {
                        current[start..].trim().to_owned()
                    } else {
                        String::new()
                    };
                    if !href.is_empty() && text != href {
                        if !current.is_empty() && !current.ends_with(' ') {
                            current.push(' ');
                        }
                        current.push_str(&format!("<{href}>"));
                    }
                }
            } else if BREAKS.contains(&tag.name.as_str()) {
                lines.push(String::new());
            } else if matches!(tag.name.as_str(), "td" | "th") && !tag.closing {
                let current = lines.last_mut().expect("never empty");
                if !current.is_empty() && !current.ends_with(' ') {
                    current.push(' ');
                }
            }
            continue;
        }
        let current = lines.last_mut().expect("never empty");
        if c == '&'
            && let Some((decoded, len)) = decode_entity(rest)
        {
            current.push(decoded);
            rest = &rest[len..];
            continue;
        }
        if c.is_whitespace() {
            if !current.is_empty() && !current.ends_with(' ') {
                current.push(' ');
            }
        } else {
            current.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    lines
        .into_iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Decodes the character reference at the start of `s` (`&amp;`, `&#8212;`, `&#x2014;`).
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let end = s[..s.len().min(12)].find(';')?;
    let name = &s[1..end];
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        _ => {
            let code = match name.strip_prefix('#') {
                Some(hex) if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16),
                Some(dec) => dec.parse(),
                None => return None,
            };
            char::from_u32(code.ok()?)?
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(source: &str) -> Content {
        parse_markdown(Path::new("email.md"), source).unwrap_or_else(|e| panic!("{e}"))
    }

    fn md_err(source: &str) -> ContentError {
        match parse_markdown(Path::new("email.md"), source) {
            Ok(content) => panic!("expected an error, got {content:?}"),
            Err(e) => e,
        }
    }

    fn render(template: &str, escape_html: bool, context: &Value) -> String {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        if !escape_html {
            registry.register_escape_fn(handlebars::no_escape);
        }
        registry
            .render_template(template, context)
            .unwrap_or_else(|e| panic!("{e}\n---\n{template}"))
    }

    fn assert_no_placeholder(content: &Content) {
        for part in [&content.html, &content.text] {
            assert!(!part.contains("hbsph"), "placeholder leaked into:\n{part}");
        }
    }

    #[test]
    fn front_matter_with_quotes_and_comments() {
        let content = md("---\n\
             # the morning email\n\
             subject: \"Good morning, {{name}}\"\n\
             \n\
             preheader: 'Ten minutes: \"just breathe\"'\n\
             offering: morning-meditation\n\
             day:   3\n\
             ---\n\
             Hello.\n");
        assert_eq!(content.subject, "Good morning, {{name}}");
        assert_eq!(
            content.preheader.as_deref(),
            Some("Ten minutes: \"just breathe\"")
        );
        assert_eq!(content.offering.as_deref(), Some("morning-meditation"));
        assert_eq!(content.day, Some(3));
        assert_eq!(content.source, Path::new("email.md"));
        assert_eq!(content.html, "<p>Hello.</p>\n");
        assert_eq!(content.text, "Hello.\n");
        check(&content).unwrap();
    }

    #[test]
    fn optional_front_matter_keys_may_be_absent() {
        let content = md("---\nsubject: Hi\n---\nHello.\n");
        assert_eq!(
            (content.preheader, content.offering, content.day),
            (None, None, None)
        );
    }

    #[test]
    fn front_matter_errors_name_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("Hello\n", 1, "front matter with a subject is required"),
            (
                "---\nsubject: Hi\nsubjct: Hi\n---\nBody\n",
                3,
                "unknown key `subjct`",
            ),
            ("---\nsubject: Hi\n\n# c\nday: 3\n", 1, "never closed"),
            (
                "---\n# only a comment\noffering: x\n---\nBody\n",
                4,
                "no `subject:`",
            ),
            (
                "---\nsubject: Hi\njust words\n---\nBody\n",
                3,
                "expected `key: value`",
            ),
            (
                "---\nsubject: Hi\nday: -1\n---\nBody\n",
                3,
                "`day` must be a whole number",
            ),
            (
                "---\nsubject: Hi\nday: three\n---\nBody\n",
                3,
                "`day` must be a whole number",
            ),
            (
                "---\nsubject: Hi\nday: 99999999999\n---\nBody\n",
                3,
                "`day` must be",
            ),
            ("---\nsubject: \"\"\n---\nBody\n", 2, "`subject` is empty"),
            ("---\nsubject: \"Hi\n---\nBody\n", 2, "not closed"),
            (
                "---\nsubject: Hi\nsubject: Ho\n---\nBody\n",
                3,
                "given twice (first on line 2)",
            ),
            (
                "---\nsubject: Hi\noffering: Morning Meditation\n---\nBody\n",
                3,
                "slug",
            ),
            ("---\nsubject: Hi\n---\n\n  \n", 3, "no body"),
        ];
        for (source, line, message) in cases {
            let err = md_err(source);
            assert_eq!(err.line, Some(*line), "{source:?} gave {err}");
            assert!(err.message.contains(message), "{source:?} gave {err}");
            assert_eq!(err.path, Path::new("email.md"));
        }
    }

    #[test]
    fn error_display_names_file_and_line() {
        let err = md_err("---\nsubject: Hi\nfoo: 1\n---\nBody\n");
        assert_eq!(
            err.to_string(),
            "email.md:3: unknown key `foo`; expected subject, preheader, offering or day"
        );
        let no_line = ContentError::file(Path::new("a.txt"), "unsupported");
        assert_eq!(no_line.to_string(), "a.txt: unsupported");
    }

    #[test]
    fn unknown_variable_is_reported_at_its_line_in_the_file() {
        // Four front-matter lines, then `{{nmae}}` on line 3 of the body: line 7 of the file.
        let content = md("---\nsubject: Hi\nday: 1\n---\nDear friend,\n\nHow are you, {{nmae}}?\n");
        let err = check(&content).unwrap_err();
        assert_eq!(err.line, Some(7), "{err}");
        assert!(err.message.contains("unknown variable `nmae`"), "{err}");
        assert!(err.to_string().starts_with("email.md:7: "), "{err}");
    }

    #[test]
    fn unknown_nested_variable_and_subject_errors() {
        let content = md("---\nsubject: Hi\n---\nA\n\n{{#if name}}\n{{offering.title}}\n{{/if}}\n");
        let err = check(&content).unwrap_err();
        assert_eq!(err.line, Some(7), "{err}");
        assert!(err.message.contains("offering.title"), "{err}");

        let content = md("---\n# c\nsubject: Hello {{nmae}}\n---\nBody\n");
        let err = check(&content).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.message.starts_with("subject: unknown variable `nmae`"),
            "{err}"
        );

        let content = md("---\nsubject: Hi\npreheader: For {{site.nam}}\n---\nBody\n");
        assert_eq!(check(&content).unwrap_err().line, Some(3));
    }

    #[test]
    fn handlebars_syntax_errors_name_their_line() {
        let err = md_err("---\nsubject: Hi\n---\nOne\n\n{{#if name}}\nTwo\n");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(
            err.message
                .contains("`{{#if}}` is never closed by `{{/if}}`"),
            "{err}"
        );
        let err = md_err("---\nsubject: Hi\n---\n{{#if name}}\n{{#unless email}}\n{{/if}}\n");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("opened on line 5"), "{err}");
        let err = md_err("---\nsubject: Hi\n---\nOne\n\nTwo {{name\n");
        assert_eq!(err.line, Some(6), "{err}");
        let err = md_err("---\nsubject: Hi\n---\nOne\n\nTwo {{name{{/x}}\n");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("handlebars syntax"), "{err}");
    }

    #[test]
    fn conditions_and_both_branches_are_checked() {
        let err = check(&md("---\nsubject: Hi\n---\nA\n\n{{#if nmae}}x{{/if}}\n")).unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("unknown variable `nmae`"), "{err}");
        // The sample name is set, so the else branch is never taken with it; still checked.
        let source = "---\nsubject: Hi\n---\n{{#if name}}\nDear {{name}}\n{{else}}\nDear {{frend}}\n{{/if}}\n";
        let err = check(&md(source)).unwrap_err();
        assert_eq!(err.line, Some(7), "{err}");
        let err = check(&md(
            "---\nsubject: Hi\n---\n{{#unless name}}{{nope}}{{/unless}}\n",
        ))
        .unwrap_err();
        assert!(err.message.contains("`nope`"), "{err}");
    }

    #[test]
    fn triple_stash_is_refused_in_markdown() {
        let err = md_err("---\nsubject: Hi\n---\nHello\n\nDear {{{name}}}\n");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("without HTML escaping"), "{err}");
        let err = md_err("---\nsubject: Hi\n---\nDear {{& name}}\n");
        assert_eq!(err.line, Some(4), "{err}");
    }

    #[test]
    fn expression_in_a_link_survives_into_href() {
        let content = md(
            "---\nsubject: Hi\n---\n[Leave this list]({{unsubscribe_url}}) or \
                          [change]({{site.base_url}}/x?a=1&b=2).\n",
        );
        assert!(
            content
                .html
                .contains(r#"<a href="{{unsubscribe_url}}">Leave this list</a>"#),
            "{}",
            content.html
        );
        assert!(
            content
                .html
                .contains(r#"href="{{site.base_url}}/x?a=1&amp;b=2""#)
        );
        assert!(
            content
                .text
                .contains("Leave this list <{{unsubscribe_url}}>"),
            "{}",
            content.text
        );
        assert_no_placeholder(&content);
        check(&content).unwrap();
    }

    #[test]
    fn subscriber_values_are_escaped_by_the_html_registry_and_markdown_never_sees_them() {
        let content = md("---\nsubject: Hi {{name}}\n---\nDear **{{name}}**,\n\n\
                          <p class=\"note\">Trusted <em>owner</em> HTML</p>\n");
        let mut context = sample_context();
        context["name"] = json!("<script>alert(1)</script> *Shakti*");
        let html = render(&content.html, true, &context);
        assert!(
            html.contains("<strong>&lt;script&gt;alert(1)&lt;/script&gt; *Shakti*</strong>"),
            "{html}"
        );
        assert!(
            html.contains("<p class=\"note\">Trusted <em>owner</em> HTML</p>"),
            "{html}"
        );
        let text = render(&content.text, false, &context);
        assert!(
            text.contains("Dear <script>alert(1)</script> *Shakti*,"),
            "{text}"
        );
        assert_eq!(
            render(&content.subject, false, &context),
            "Hi <script>alert(1)</script> *Shakti*"
        );
    }

    #[test]
    fn text_part_is_readable() {
        let content = md("---\nsubject: Hi\n---\n\
# Welcome, {{name}}

Some *emphasis*, **strong** and `code`.
A second line.

## Practice

- Breathe in
- Breathe out
  - slowly
  - gently
- Rest

1. One
2. Two

> Be here now.
>
> Second quoted paragraph.

    let breath = 1;
    let again = 2;

Read [the blog]({{site.base_url}}/blog) or <https://example.com/x>.\\
After a hard break. ![A lotus](lotus.png)

---

| Day | Practice |
|-----|----------|
| 1   | Breath   |

<div style=\"color:red\">
  <a href=\"{{preferences_url}}\">Manage your emails</a>
</div>

Bye <span>now</span>.
");
        let expected = "\
Welcome, {{name}}
=================

Some emphasis, strong and code.
A second line.

Practice
--------

- Breathe in
- Breathe out
  - slowly
  - gently
- Rest

1. One
2. Two

> Be here now.
>
> Second quoted paragraph.

    let breath = 1;
    let again = 2;

Read the blog <{{site.base_url}}/blog> or https://example.com/x.
After a hard break. A lotus

---

Day | Practice
--------------
1 | Breath

Manage your emails <{{preferences_url}}>

Bye now.
";
        assert_eq!(content.text, expected);
        assert!(content.text.lines().all(|l| l == l.trim_end()));
        assert_no_placeholder(&content);
        check(&content).unwrap();
    }

    #[test]
    fn loose_lists_and_nested_ordered_lists() {
        let content = md("---\nsubject: Hi\n---\n\
- First

  More about first.

- Second
  1. a
  2. b

Done.
");
        assert_eq!(
            content.text,
            "- First\n\n  More about first.\n\n- Second\n\n  1. a\n  2. b\n\nDone.\n"
        );
    }

    #[test]
    fn if_block_across_paragraphs() {
        let content = md("---\nsubject: Hi\n---\n\
Hello.

{{#if name}}
Dear {{name}},

we missed you.
{{else}}
Dear friend,
{{/if}}

Bye.
");
        assert_no_placeholder(&content);
        check(&content).unwrap();

        let mut context = sample_context();
        let html = render(&content.html, true, &context);
        // Block tags inside a paragraph stay there, so either branch leaves balanced HTML.
        assert_eq!(
            html,
            "<p>Hello.</p>\n<p>\nDear Asha,</p>\n<p>we missed you.\n</p>\n<p>Bye.</p>\n"
        );
        let text = render(&content.text, false, &context);
        assert_eq!(text, "Hello.\n\nDear Asha,\n\nwe missed you.\n\nBye.\n");

        context["name"] = json!("");
        let html = render(&content.html, true, &context);
        assert_eq!(html, "<p>Hello.</p>\n<p>Dear friend,\n</p>\n<p>Bye.</p>\n");
        let text = render(&content.text, false, &context);
        assert_eq!(text, "Hello.\n\nDear friend,\n\nBye.\n");
    }

    #[test]
    fn if_block_standing_as_its_own_paragraphs() {
        let content = md("---\nsubject: Hi\n---\n\
Hello.

{{#if name}}

Dear {{name}}.

{{/if}}

Bye.
");
        let mut context = sample_context();
        assert_eq!(
            render(&content.text, false, &context),
            "Hello.\n\nDear Asha.\n\nBye.\n"
        );
        assert_eq!(
            render(&content.html, true, &context),
            "<p>Hello.</p>\n<p>Dear Asha.</p>\n<p>Bye.</p>\n"
        );
        context["name"] = json!("");
        assert_eq!(render(&content.text, false, &context), "Hello.\n\nBye.\n");
        assert_eq!(
            render(&content.html, true, &context),
            "<p>Hello.</p>\n<p>Bye.</p>\n"
        );
    }

    #[test]
    fn placeholders_never_leak_even_when_the_source_contains_the_prefix() {
        let content = md(
            "---\nsubject: Hi\n---\nhbsph0x7q1z and hbsph0x7qq {{name}} \
                          `{{email}}` {{! a comment }} {{!-- a }} comment --}}\n\n    {{date}}\n",
        );
        for part in [&content.html, &content.text] {
            // The source holds `hbsph0x7q` and `hbsph0x7qq`, so the prefix is `hbsph0x7qqq`.
            assert!(
                !part.contains("hbsph0x7qqq"),
                "placeholder leaked into:\n{part}"
            );
            assert!(
                part.contains("hbsph0x7q1z and hbsph0x7qq {{name}}"),
                "{part}"
            );
        }
        assert!(content.html.contains("<code>{{email}}</code>"));
        assert!(content.html.contains("<pre><code>{{date}}\n</code></pre>"));
        assert!(content.text.contains("{{!-- a }} comment --}}"));
        check(&content).unwrap();
    }

    #[test]
    fn escaped_braces_stay_literal() {
        let content = md("---\nsubject: Hi\n---\nWrite \\{{name}} or \\{\\{x}} to show braces.\n");
        check(&content).unwrap();
        let context = sample_context();
        let html = render(&content.html, true, &context);
        assert!(
            html.contains("Write {{name}} or &#123;{x}} to show"),
            "{html}"
        );
        let text = render(&content.text, false, &context);
        assert_eq!(text, "Write {{name}} or {{x}} to show braces.\n");
    }

    #[test]
    fn sample_context_has_every_variable() {
        let context = sample_context();
        let keys: Vec<&str> = context
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = VARIABLES.to_vec();
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        let content = md(
            "---\nsubject: Hi\n---\n{{name}} {{email}} {{offering.name}} \
                          {{offering.slug}} {{offering.description}} {{date}} \
                          {{unsubscribe_url}} {{preferences_url}} {{site.name}} {{site.base_url}}\n",
        );
        check(&content).unwrap();
    }

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
        let err = load(&html).unwrap_err();
        assert_eq!(
            (err.path.as_path(), err.line),
            (text.as_path(), Some(4)),
            "{err}"
        );

        // Front matter in the text file must agree with the HTML file's.
        std::fs::write(&text, "---\nday: 2\n---\nDear {{name}},\n").unwrap();
        let err = load(&html).unwrap_err();
        assert_eq!(
            (err.path.as_path(), err.line),
            (text.as_path(), Some(2)),
            "{err}"
        );

        // And one in the HTML file is counted after its front matter.
        std::fs::write(&text, "Dear {{name}}\n").unwrap();
        std::fs::write(&html, "---\nsubject: Hi\n---\n<p>\n{{nmae}}</p>\n").unwrap();
        let err = load(&html).unwrap_err();
        assert_eq!(
            (err.path.as_path(), err.line),
            (html.as_path(), Some(5)),
            "{err}"
        );
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
