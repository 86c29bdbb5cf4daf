//! Turns a claimed delivery into a message: picks the templates, fills the context, renders
//! the HTML and text parts and the subject.

use std::sync::Arc;

use lettre::Message;
use lettre::message::Mailbox;
use serde_json::json;

use super::{EmailContent, Templates, build_message};
use crate::links::Links;
use crate::store::{ClaimedDelivery, ConfirmationEmail};

/// Everything needed to render emails, shared by the workers.
#[derive(Debug, Clone)]
pub struct Composer {
    templates: Arc<Templates>,
    links: Links,
    from: Mailbox,
    site_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Template(#[from] super::TemplateError),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("bad recipient address `{0}`")]
    Recipient(String),
}

impl Composer {
    pub fn new(templates: Arc<Templates>, links: Links, from: Mailbox, site_name: &str) -> Self {
        Self {
            templates,
            links,
            from,
            site_name: site_name.to_owned(),
        }
    }

    fn site(&self) -> serde_json::Value {
        json!({ "name": self.site_name, "base_url": self.links.base_url() })
    }

    fn recipient(delivery: &ClaimedDelivery) -> Result<Mailbox, ComposeError> {
        let address = delivery
            .email
            .parse()
            .map_err(|_| ComposeError::Recipient(delivery.email.clone()))?;
        Ok(Mailbox::new(delivery.name.clone(), address))
    }

    /// The double opt-in email of one signup.
    pub fn confirmation(
        &self,
        delivery: &ClaimedDelivery,
        signup: &ConfirmationEmail,
    ) -> Result<Message, ComposeError> {
        let mut context = json!({
            "site": self.site(),
            "greeting_name": delivery.name.clone().unwrap_or_else(|| "friend".to_owned()),
            "offerings": signup.offerings.iter()
                .map(|o| json!({ "name": o.name, "description": o.description }))
                .collect::<Vec<_>>(),
            "confirm_url": self.links.confirm_url(signup.consent_id, signup.signed_up_at),
            "expires_days": self.links.confirm_ttl_days(),
        });
        let subject = self
            .templates
            .render_text("emails/confirm.subject", &context)?;
        context["subject"] = json!(subject.trim());
        context["preheader"] = json!("One click to confirm, and nothing more.");
        let content = EmailContent {
            subject,
            html: self
                .templates
                .render_html("emails/confirm.html", &context)?,
            text: self.templates.render_text("emails/confirm.txt", &context)?,
        };
        Ok(build_message(
            &self.from,
            Self::recipient(delivery)?,
            &delivery.message_id,
            content,
        )?)
    }
}
