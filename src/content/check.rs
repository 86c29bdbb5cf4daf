//! Checking content: every template rendered in strict mode against sample values of the
//! variables content may use, errors mapped back to the line of the owner's file.

use std::path::Path;

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, TemplateError,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::registry::{Escape, registry};
use super::{Content, ContentError};

/// The handlebars context of one recipient's copy of a send: every variable content may use.
/// The check renders content against [`Variables::sample`]; `mail` fills the same struct for
/// each recipient, so a variable added here is known to both.
#[derive(Debug, Clone, Serialize)]
pub struct Variables<'a> {
    /// The person's name, or `friend` when they gave none.
    pub name: &'a str,
    pub email: &'a str,
    pub offering: OfferingVariables<'a>,
    /// The send's date, as `1 December 2026`.
    pub date: &'a str,
    pub unsubscribe_url: String,
    pub preferences_url: String,
    pub site: SiteVariables<'a>,
    /// The send's public copy in its offering's archive (`null` when it has none: the
    /// offering has no archive, or the send is private).
    pub web_url: Option<String>,
}

/// `offering.*`: the offering a send belongs to.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OfferingVariables<'a> {
    pub name: &'a str,
    pub slug: &'a str,
    pub description: &'a str,
}

/// `site.*`: the site's name and address, in every email.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SiteVariables<'a> {
    pub name: &'a str,
    pub base_url: &'a str,
}

impl Variables<'static> {
    /// Sample values of every variable, for checks and previews.
    pub fn sample() -> Self {
        Self {
            name: "Asha",
            email: "asha@example.com",
            offering: OfferingVariables {
                name: "Morning Meditation",
                slug: "morning-meditation",
                description: "A short guided meditation to begin the day.",
            },
            date: "1 December 2026",
            unsubscribe_url: "http://localhost:3000/unsubscribe/sample-token".to_owned(),
            preferences_url: "http://localhost:3000/preferences/sample-token".to_owned(),
            site: SiteVariables {
                name: "Shakti Temple",
                base_url: "http://localhost:3000",
            },
            web_url: Some("http://localhost:3000/archive/morning-meditation/1".to_owned()),
        }
    }
}

/// The names of the fields of [`Variables`], in the order error messages list them (a test
/// holds the two equal).
pub const VARIABLES: &[&str] = &[
    "name",
    "email",
    "offering",
    "date",
    "unsubscribe_url",
    "preferences_url",
    "site",
    "web_url",
];

/// [`Variables::sample`] as a handlebars context, for checks and previews.
pub fn sample_context() -> Value {
    json!(Variables::sample())
}

/// Renders every template of `content` in strict mode against [`sample_context`]. An unknown
/// variable or a handlebars syntax error is reported at its line in the source file (front
/// matter lines counted).
pub fn check(content: &Content) -> Result<(), ContentError> {
    let origin = &content.origin;
    let at_line = |line: usize, what: &str, template: &str| {
        render_sample(template, Escape::None).map_err(|(_, message)| {
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
        render_sample(&body.template, Escape::None).map_err(|(line, message)| ContentError {
            path: body.path.clone(),
            line: line.map(|l| body.first_line + l - 1),
            message,
        })?;
    }
    // The bodies passed, so these only fail if conversion itself went wrong.
    for (what, template, escape) in [
        ("HTML", &content.html, Escape::Html),
        ("text", &content.text, Escape::None),
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
fn render_sample(template: &str, escape: Escape) -> Result<String, (Option<usize>, String)> {
    let mut registry = registry(escape);
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
pub(super) fn compile(path: &Path, first_line: usize, template: &str) -> Result<(), ContentError> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::md;
    use super::*;

    /// The error `check` gives for the Markdown `source`, which must name `line`.
    fn check_err(source: &str, line: usize) -> ContentError {
        let err = check(&md(source)).unwrap_err();
        assert_eq!(err.line, Some(line), "{err}");
        err
    }

    #[test]
    fn unknown_variable_is_reported_at_its_line_in_the_file() {
        // Four front-matter lines, then `{{nmae}}` on line 3 of the body: line 7 of the file.
        let err = check_err(
            "---\nsubject: Hi\nday: 1\n---\nDear friend,\n\nHow are you, {{nmae}}?\n",
            7,
        );
        assert!(err.message.contains("unknown variable `nmae`"), "{err}");
        assert!(err.to_string().starts_with("email.md:7: "), "{err}");
    }

    #[test]
    fn unknown_nested_variable_and_subject_errors() {
        let err = check_err(
            "---\nsubject: Hi\n---\nA\n\n{{#if name}}\n{{offering.title}}\n{{/if}}\n",
            7,
        );
        assert!(err.message.contains("offering.title"), "{err}");

        let err = check_err("---\n# c\nsubject: Hello {{nmae}}\n---\nBody\n", 3);
        assert!(
            err.message.starts_with("subject: unknown variable `nmae`"),
            "{err}"
        );

        check_err(
            "---\nsubject: Hi\npreheader: For {{site.nam}}\n---\nBody\n",
            3,
        );
    }

    #[test]
    fn conditions_and_both_branches_are_checked() {
        let err = check_err("---\nsubject: Hi\n---\nA\n\n{{#if nmae}}x{{/if}}\n", 6);
        assert!(err.message.contains("unknown variable `nmae`"), "{err}");
        // The sample name is set, so the else branch is never taken with it; still checked.
        let source = "---\nsubject: Hi\n---\n{{#if name}}\nDear {{name}}\n{{else}}\nDear {{frend}}\n{{/if}}\n";
        check_err(source, 7);
        let err = check_err(
            "---\nsubject: Hi\n---\n{{#unless name}}{{nope}}{{/unless}}\n",
            4,
        );
        assert!(err.message.contains("`nope`"), "{err}");
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
                          {{unsubscribe_url}} {{preferences_url}} {{site.name}} {{site.base_url}} \
                          {{#if web_url}}{{web_url}}{{/if}}\n",
        );
        check(&content).unwrap();
    }
}
