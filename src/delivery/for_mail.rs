//! Store rows described as `mail` renders them: `mail` knows nothing of the store.

use crate::mail::{OfferingInfo, Recipient, SendTemplates, SignupToConfirm};
use crate::store::{ClaimedDelivery, ConfirmationEmail, Offering, SendContent};

/// The person a claimed delivery goes to.
pub fn recipient(delivery: &ClaimedDelivery) -> Recipient<'_> {
    Recipient {
        email: &delivery.email,
        name: delivery.name.as_deref(),
        link: delivery.subscriber_link(),
        message_id: &delivery.message_id,
        delivery_id: Some(delivery.id),
    }
}

/// An offering row as emails name it.
pub fn offering(offering: &Offering) -> OfferingInfo<'_> {
    OfferingInfo {
        id: offering.id,
        slug: &offering.slug,
        name: &offering.name,
        description: &offering.description,
    }
}

/// A stored send's templates.
pub fn templates(send: &SendContent) -> SendTemplates<'_> {
    SendTemplates {
        id: send.id,
        subject: &send.subject,
        preheader: send.preheader.as_deref(),
        html: &send.html_template,
        text: &send.text_template,
        send_at: send.send_at,
        private: send.private,
    }
}

/// The signup of a claimed confirmation.
pub fn signup(signup: &ConfirmationEmail) -> SignupToConfirm<'_> {
    SignupToConfirm {
        consent: signup.consent,
        signed_up_at: signup.signed_up_at,
        offerings: signup.offerings.iter().map(offering).collect(),
        reminded_at: signup.reminded_at,
    }
}
