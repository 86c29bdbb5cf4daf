//! Email: templates, message building and transports.

mod compose;
mod message;
mod smtp;
mod templates;
mod transport;

pub use compose::{
    CompiledSend, ComposeError, Composer, OfferingInfo, Recipient, SendTemplates, SignupToConfirm,
};
pub use message::{EmailContent, build_message};
pub use templates::{TemplateError, Templates};
pub use transport::{RelayFault, RelayState, SendError, SendErrorKind, Transport};
