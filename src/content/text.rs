//! The plain-text part: Markdown events (and HTML blocks in them) written as readable text.
//!
//! Ours, not `html2text` (0.17) for HTML blocks: it writes a link as `[text][1]` with a
//! footnote, or drops its URL, where `text_part_is_readable` wants `text <url>`, and it brings
//! html5ever, markup5ever, string_cache, tendril and the phf crates. Entities are ours too, not `html-escape` (0.3): it
//! decodes the same references we know, but `&nbsp;` to U+00A0 where we write a space; the
//! named references we do not know (`&rsquo;`) stay as written, as they did before.

use std::path::Path;

use pulldown_cmark::{Event, HeadingLevel, Tag, TagEnd};

use super::ContentError;
use super::html::Masked;

impl Masked {
    /// The plain-text body template.
    pub(super) fn to_text(&self, path: &Path) -> Result<String, ContentError> {
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
    use super::super::check;
    use super::super::test_support::{assert_no_placeholder, md};

    /// Lists, quotes and indented code read well as they are: the text part keeps them.
    const VERBATIM: &str = "\
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
";

    #[test]
    fn text_part_is_readable() {
        let source = [
            "---\nsubject: Hi\n---\n\
# Welcome, {{name}}

Some *emphasis*, **strong** and `code`.
A second line.

## Practice

",
            VERBATIM,
            "
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
",
        ]
        .concat();
        let content = md(&source);
        let expected = [
            "\
Welcome, {{name}}
=================

Some emphasis, strong and code.
A second line.

Practice
--------

",
            VERBATIM,
            "
Read the blog <{{site.base_url}}/blog> or https://example.com/x.
After a hard break. A lotus

---

Day | Practice
--------------
1 | Breath

Manage your emails <{{preferences_url}}>

Bye now.
",
        ]
        .concat();
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
}
