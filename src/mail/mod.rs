//! Email: templates, message building and transports.

mod compose;
mod message;
mod templates;
mod transport;

pub use compose::{ComposeError, Composer};
pub use message::{EmailContent, build_message, new_message_id};
pub use templates::{TemplateError, Templates};
pub use transport::{SendError, SendErrorKind, Transport};
