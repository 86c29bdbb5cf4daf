//! The `---` block at the top of a content file: subject, preheader, offering and day.
//!
//! Ours, not `gray_matter` (0.3, YAML): it takes `subjct: Hi` without a word, has no line for
//! a key, calls an unclosed block body, takes `day: -1`, and refuses `subject: {{name}} says
//! hi` (YAML reads `{` as a mapping), so `front_matter_errors_name_their_line` fails and
//! content that loads today would be refused.

use std::path::Path;

use super::{Content, ContentError, Origin, SourceBody};
use crate::domain::Slug;

/// The `---` block at the top of a content file. Each value keeps its line for error messages.
#[derive(Debug, Default)]
pub(super) struct FrontMatter {
    subject: Option<(String, usize)>,
    preheader: Option<(String, usize)>,
    offering: Option<(String, usize)>,
    day: Option<(u32, usize)>,
    /// Lines up to and including the closing `---`; the body starts on the next line.
    pub(super) lines: usize,
    /// Byte offset of the body in the source.
    pub(super) body_offset: usize,
}

const KEYS: &str = "subject, preheader, offering or day";

impl FrontMatter {
    /// Reads the front matter that must open `source`, and returns it with the body after it
    /// and the line the body starts on. An empty body is refused.
    pub(super) fn parse_with_body<'s>(
        path: &Path,
        source: &'s str,
    ) -> Result<(Self, &'s str, usize), ContentError> {
        let front = Self::parse_required(path, source)?;
        let body = &source[front.body_offset..];
        if body.trim().is_empty() {
            return Err(ContentError::at(
                path,
                front.lines,
                "the email has no body after the front matter",
            ));
        }
        let first_line = front.lines + 1;
        Ok((front, body, first_line))
    }

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
    pub(super) fn parse(path: &Path, source: &str) -> Result<Option<Self>, ContentError> {
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
                let slug = Slug::parse(value).map_err(|e| e.to_string())?;
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
    pub(super) fn agrees_with(
        &self,
        html: &FrontMatter,
        text_path: &Path,
    ) -> Result<(), ContentError> {
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

    pub(super) fn into_content(
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{md, md_err};
    use super::super::{ContentError, check};

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
}
