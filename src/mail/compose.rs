//! Turns a recipient and a send (or a signup) into a message: picks the templates, fills the
//! context, renders the HTML and text parts and the subject. It knows nothing of store rows:
//! callers describe what to render with the types below.

use std::sync::Arc;

use lettre::message::Mailbox;
use lettre::{Address, Message};
use serde_json::json;

use handlebars::Handlebars;

use super::{EmailContent, TemplateError, Templates, build_message};
use crate::clock::Millis;
use crate::content::{Escape, OfferingVariables, SiteVariables, Variables, registry};
use crate::domain::LinkTarget;
use crate::links::Links;

/// Who one copy goes to: the address, the name, the person's links, the Message-ID and the
/// delivery it is.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub email: &'a str,
    pub name: Option<&'a str>,
    /// What the person's unsubscribe and preferences links act on.
    pub link: LinkTarget,
    pub message_id: &'a str,
    /// The delivery row this copy is, named by its VERP envelope sender; `None` for a copy
    /// that is no delivery (a test-send).
    pub delivery_id: Option<i64>,
}

/// An offering as an email names it.
#[derive(Debug, Clone, Copy)]
pub struct OfferingInfo<'a> {
    pub id: i64,
    pub slug: &'a str,
    pub name: &'a str,
    pub description: &'a str,
}

/// The templates of a send, as the owner wrote them.
#[derive(Debug, Clone, Copy)]
pub struct SendTemplates<'a> {
    /// Names the send in template errors.
    pub id: i64,
    pub subject: &'a str,
    pub preheader: Option<&'a str>,
    pub html: &'a str,
    pub text: &'a str,
    pub send_at: Millis,
    /// Kept out of the offering's archive, and so without a "read on the web" link; also set
    /// for content that is no stored send yet (a preview, a test send), which has no web copy.
    pub private: bool,
}

/// The signup a confirmation email asks to confirm.
#[derive(Debug, Clone)]
pub struct SignupToConfirm<'a> {
    /// What the confirm link acts on.
    pub consent: LinkTarget,
    /// When the signup happened; the link expires a fixed time after it.
    pub signed_up_at: Millis,
    pub offerings: Vec<OfferingInfo<'a>>,
    /// `Some(when it was queued)` for the signup's one reminder: it says it is a reminder, and
    /// its link (bound to the same signup) works for the whole link lifetime from then.
    pub reminded_at: Option<Millis>,
}

/// Everything needed to render emails, shared by the workers.
#[derive(Debug, Clone)]
pub struct Composer {
    templates: Arc<Templates>,
    links: Links,
    from: Mailbox,
    site_name: String,
    /// Right-hand side of List-Id values.
    list_id_domain: String,
    /// The slugs of the offerings with a public archive (`archive = true`).
    archives: Vec<String>,
    /// An address that unsubscribes by mail, offered in List-Unsubscribe beside the link.
    unsubscribe_mailto: Option<String>,
    /// `mail.return_path`: when set, each delivery's envelope sender is a VERP address under
    /// it; when not, the From address.
    return_path: Option<Address>,
}

/// Headers added to a message beyond the usual ones (name, value).
pub type ExtraHeaders = Vec<(&'static str, String)>;

/// A send's templates, compiled once per worker and reused for every recipient.
#[derive(Debug)]
pub struct CompiledSend {
    id: i64,
    private: bool,
    html: Handlebars<'static>,
    text: Handlebars<'static>,
    preheader: Option<String>,
    /// The send's date, shown as `date` in the content.
    date: String,
}

impl CompiledSend {
    /// Compiles a send's templates once, for every recipient.
    pub fn new(send: &SendTemplates<'_>) -> Result<Self, TemplateError> {
        let invalid = |e: handlebars::TemplateError| TemplateError::Invalid {
            name: format!("send {}", send.id),
            message: e.to_string(),
        };
        let mut html = registry(Escape::Html);
        html.register_template_string("html", send.html)
            .map_err(invalid)?;
        let mut text = registry(Escape::None);
        text.register_template_string("text", send.text)
            .map_err(invalid)?;
        text.register_template_string("subject", send.subject)
            .map_err(invalid)?;
        let date = jiff::Timestamp::from_millisecond(send.send_at)
            .map(|t| t.strftime("%-d %B %Y").to_string())
            .unwrap_or_default();
        Ok(Self {
            id: send.id,
            private: send.private,
            html,
            text,
            preheader: send.preheader.map(str::to_owned),
            date,
        })
    }
}

impl CompiledSend {
    /// The web copy of this send for its offering's public archive: rendered for no one. The
    /// name is the one a person who gave none sees (`friend`), the address is empty, and the
    /// unsubscribe and preferences links lead to the signup page, so no token or detail of a
    /// subscriber can appear. Escaped as the email is.
    pub fn public_copy(
        &self,
        offering: &OfferingInfo<'_>,
        site_name: &str,
        links: &Links,
    ) -> Result<PublicCopy, ComposeError> {
        let signup_url = format!("{}/subscribe", links.base_url());
        let context = json!(Variables {
            name: "friend",
            email: "",
            offering: OfferingVariables {
                name: offering.name,
                slug: offering.slug,
                description: offering.description,
            },
            date: &self.date,
            unsubscribe_url: signup_url.clone(),
            preferences_url: signup_url,
            site: SiteVariables {
                name: site_name,
                base_url: links.base_url(),
            },
            web_url: Some(links.archive_send_url(offering.slug, self.id)),
        });
        Ok(PublicCopy {
            subject: self.text.render("subject", &context)?,
            preheader: self.preheader.clone(),
            date: self.date.clone(),
            html: self.html.render("html", &context)?,
        })
    }
}

/// A send as its archive page shows it (see [`CompiledSend::public_copy`]).
#[derive(Debug, Clone)]
pub struct PublicCopy {
    pub subject: String,
    pub preheader: Option<String>,
    /// The send's date, as `1 December 2026`.
    pub date: String,
    /// The body's HTML, to be placed unescaped into a page.
    pub html: String,
}

/// Why a message could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Template(#[from] super::TemplateError),
    #[error(transparent)]
    Render(#[from] handlebars::RenderError),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("bad recipient address `{0}`")]
    Recipient(String),
}

impl Composer {
    /// A composer over the templates and links.
    pub fn new(
        templates: Arc<Templates>,
        links: Links,
        from: Mailbox,
        site_name: &str,
        list_id_domain: &str,
        unsubscribe_mailto: Option<String>,
    ) -> Self {
        Self {
            templates,
            links,
            from,
            site_name: site_name.to_owned(),
            list_id_domain: list_id_domain.to_owned(),
            archives: Vec::new(),
            unsubscribe_mailto,
            return_path: None,
        }
    }

    /// This composer, giving the sends of these offerings (their slugs: those with
    /// `archive = true`) a "read on the web" link, unless a send is private.
    pub fn with_archives(mut self, slugs: Vec<String>) -> Self {
        self.archives = slugs;
        self
    }

    /// This composer, sending each delivery from its own VERP address under `return_path`
    /// (`mail.return_path`), and what is no delivery from `return_path` itself.
    pub fn with_return_path(mut self, return_path: Option<Address>) -> Self {
        self.return_path = return_path;
        self
    }

    /// The envelope sender (Return-Path) of one copy: a VERP address naming its delivery under
    /// the return path, the return path itself for a copy that is no delivery, or the From
    /// address when no return path is configured.
    pub fn envelope_sender(&self, to: &Recipient<'_>) -> Address {
        match (&self.return_path, to.delivery_id) {
            (Some(path), Some(id)) => self.links.bounce_address(path, id, to.message_id),
            (Some(path), None) => path.clone(),
            (None, _) => self.from.email.clone(),
        }
    }

    /// The links it puts in messages.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// One recipient's copy of a send, with the list headers of RFC 2369, RFC 2919 and the
    /// one-click unsubscribe of RFC 8058.
    pub fn send_email(
        &self,
        to: &Recipient<'_>,
        send: &CompiledSend,
        offering: &OfferingInfo<'_>,
    ) -> Result<Message, ComposeError> {
        let (content, headers) = self.render_send(to, send, offering)?;
        Ok(build_message(
            &self.from,
            &self.envelope_sender(to),
            Self::mailbox(to)?,
            to.message_id,
            content,
            headers,
        )?)
    }

    /// The rendered parts and list headers of one recipient's copy of a send.
    pub fn render_send(
        &self,
        to: &Recipient<'_>,
        send: &CompiledSend,
        offering: &OfferingInfo<'_>,
    ) -> Result<(EmailContent, ExtraHeaders), ComposeError> {
        let unsubscribe_url = self.links.unsubscribe_url(to.link, offering.id);
        let mut context = json!(Variables {
            name: to.name.unwrap_or("friend"),
            email: to.email,
            offering: OfferingVariables {
                name: offering.name,
                slug: offering.slug,
                description: offering.description,
            },
            date: &send.date,
            unsubscribe_url: unsubscribe_url.clone(),
            preferences_url: self.links.preferences_url(to.link),
            site: self.site(),
            web_url: (!send.private && self.archives.iter().any(|a| a == offering.slug))
                .then(|| self.links.archive_send_url(offering.slug, send.id)),
        });
        let subject = send.text.render("subject", &context)?;
        let body_html = send.html.render("html", &context)?;
        let body_text = send.text.render("text", &context)?;
        context["subject"] = json!(subject);
        context["preheader"] = json!(send.preheader);
        context["body"] = json!(body_html);
        let html = self.templates.render_html("emails/send.html", &context)?;
        context["body"] = json!(body_text);
        let text = self.templates.render_text("emails/send.txt", &context)?;
        let mut list_unsubscribe = format!("<{unsubscribe_url}>");
        if let Some(mailto) = &self.unsubscribe_mailto {
            list_unsubscribe.push_str(&format!(", <mailto:{mailto}?subject=unsubscribe>"));
        }
        let list_id = format!("<{}.{}>", offering.slug, self.list_id_domain);
        let list_id = if offering
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ')
        {
            format!("{} {list_id}", offering.name)
        } else {
            list_id
        };
        Ok((
            EmailContent {
                subject,
                html,
                text,
            },
            vec![
                ("List-Unsubscribe", list_unsubscribe),
                (
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".to_owned(),
                ),
                ("List-Id", list_id),
            ],
        ))
    }

    fn site(&self) -> SiteVariables<'_> {
        SiteVariables {
            name: &self.site_name,
            base_url: self.links.base_url(),
        }
    }

    fn mailbox(to: &Recipient<'_>) -> Result<Mailbox, ComposeError> {
        let address = to
            .email
            .parse()
            .map_err(|_| ComposeError::Recipient(to.email.to_owned()))?;
        Ok(Mailbox::new(to.name.map(str::to_owned), address))
    }

    /// The double opt-in email of one signup, or its reminder (`emails/remind.*`).
    pub fn confirmation(
        &self,
        to: &Recipient<'_>,
        signup: &SignupToConfirm<'_>,
    ) -> Result<Message, ComposeError> {
        let (template, link_from) = match signup.reminded_at {
            Some(at) => ("emails/remind", at),
            None => ("emails/confirm", signup.signed_up_at),
        };
        let mut context = json!({
            "site": self.site(),
            "greeting_name": to.name.unwrap_or("friend"),
            "offerings": signup.offerings.iter()
                .map(|o| json!({ "name": o.name, "description": o.description }))
                .collect::<Vec<_>>(),
            "confirm_url": self.links.confirm_url(signup.consent, link_from),
            "expires_days": self.links.confirm_ttl_days(),
            "signed_up_on": jiff::Timestamp::from_millisecond(signup.signed_up_at)
                .map(|t| t.strftime("%-d %B %Y").to_string())
                .unwrap_or_default(),
        });
        let subject = self
            .templates
            .render_text(&format!("{template}.subject"), &context)?;
        context["subject"] = json!(subject.trim());
        context["preheader"] = json!(match signup.reminded_at {
            Some(_) => "A gentle reminder: one click to confirm, or nothing at all.",
            None => "One click to confirm, and nothing more.",
        });
        let content = EmailContent {
            subject,
            html: self
                .templates
                .render_html(&format!("{template}.html"), &context)?,
            text: self
                .templates
                .render_text(&format!("{template}.txt"), &context)?,
        };
        Ok(build_message(
            &self.from,
            &self.envelope_sender(to),
            Self::mailbox(to)?,
            to.message_id,
            content,
            Vec::new(),
        )?)
    }
}
