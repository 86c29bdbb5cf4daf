//! Handlebars templates for pages and emails.
//!
//! The defaults in `templates/` are embedded in the binary; a `templates/` folder next to the
//! config file overrides them file by file. Each file is registered under its path without
//! `.hbs` (`emails/confirm.html`) and can be used as a partial by that name. Strict mode makes
//! a missing variable an error instead of an empty string. HTML templates escape `{{x}}`;
//! text templates (`*.txt`, `*.subject`) are rendered by a second registry without escaping.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use rust_embed::RustEmbed;
use serde::Serialize;

use crate::content::{Escape, registry};

#[derive(RustEmbed)]
#[folder = "templates/"]
struct Embedded;

/// A template that could not be read or compiled.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("cannot read template folder {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] handlebars::RenderError),
}

/// The two registries: one escaping for HTML, one plain for text.
#[derive(Debug)]
pub struct Templates {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl Templates {
    /// Loads the embedded defaults, then the files of `overrides` if given.
    pub fn load(overrides: Option<&Path>) -> Result<Self, TemplateError> {
        let mut html = registry(Escape::Html);
        let mut text = registry(Escape::None);

        let mut sources: Vec<(String, String)> = Vec::new();
        for file in Embedded::iter().filter(|f| f.ends_with(".hbs")) {
            let data = Embedded::get(&file).expect("listed by iter");
            let body =
                String::from_utf8(data.data.into_owned()).map_err(|_| TemplateError::Invalid {
                    name: file.to_string(),
                    message: "is not UTF-8".into(),
                })?;
            sources.push((file.to_string(), body));
        }
        if let Some(dir) = overrides {
            collect_files(dir, dir, &mut sources)?;
        }
        for (file, body) in sources {
            let name = file.trim_end_matches(".hbs").to_owned();
            for registry in [&mut html, &mut text] {
                registry
                    .register_template_string(&name, &body)
                    .map_err(|e| TemplateError::Invalid {
                        name: file.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        Ok(Self { html, text })
    }

    /// Renders an HTML template (`pages/subscribe.html`, `emails/confirm.html`).
    pub fn render_html<T: Serialize>(&self, name: &str, data: &T) -> Result<String, TemplateError> {
        Ok(self.html.render(name, data)?)
    }

    /// Renders a text template (`emails/confirm.txt`, `emails/confirm.subject`) unescaped.
    pub fn render_text<T: Serialize>(&self, name: &str, data: &T) -> Result<String, TemplateError> {
        Ok(self.text.render(name, data)?)
    }

    /// True when a template of this name is registered.
    pub fn has(&self, name: &str) -> bool {
        self.html.has_template(name)
    }
}

fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, String)>,
) -> Result<(), TemplateError> {
    let read_err = |source| TemplateError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "hbs") {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            let body = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                path: path.clone(),
                source,
            })?;
            out.retain(|(name, _)| name != &rel);
            out.push((rel, body));
        }
    }
    Ok(())
}
