//! The one way a handlebars registry is made, for the owner's content, the email layouts and
//! the pages alike: strict mode, so a missing variable is an error and not an empty string,
//! and HTML escaping on or off. It lives in `content`, which imports only `domain`, so that
//! both the content check and `mail` (which may import `content`) can use it.

use handlebars::Handlebars;

/// Whether `{{x}}` escapes its value for HTML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// HTML parts and pages: `{{x}}` escapes, `{{{x}}}` does not.
    Html,
    /// Subjects, preheaders and text parts: values go in as they are.
    None,
}

/// A strict registry with the given escaping and no templates yet.
pub fn registry(escape: Escape) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    if escape == Escape::None {
        registry.register_escape_fn(handlebars::no_escape);
    }
    registry
}
