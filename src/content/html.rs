//! Markdown to the HTML template, with the handlebars expressions masked from Markdown.
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

use std::path::Path;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::ContentError;

/// A Markdown body whose handlebars expressions are replaced by placeholders.
pub(super) struct Masked {
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
    pub(super) fn new(
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
    pub(super) fn restore(&self, rendered: &str, path: &Path) -> Result<String, ContentError> {
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
    pub(super) fn restore_lossy(&self, rendered: &str) -> String {
        self.restore(rendered, Path::new(""))
            .unwrap_or_else(|_| rendered.to_owned())
    }

    /// If the paragraph starting at `events[start]` holds nothing but block tags
    /// (`{{#if x}}`, `{{/if}}`), returns their placeholders and the index of its end.
    pub(super) fn control_paragraph(
        &self,
        events: &[Event],
        start: usize,
    ) -> Option<(Vec<String>, usize)> {
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

    pub(super) fn events(&self) -> Vec<Event<'_>> {
        let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
        Parser::new_ext(&self.text, options).collect()
    }

    /// The HTML body template.
    pub(super) fn to_html(&self, path: &Path) -> Result<String, ContentError> {
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
}

/// Whether triple-stash `{{{x}}}` is allowed: never where the output is HTML.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Unescaped {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{assert_no_placeholder, md, md_err, render};
    use super::super::{check, sample_context};

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
}
