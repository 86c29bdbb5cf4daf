//! Email: templates, message building, DKIM signing and transports.

mod compose;
mod dkim;
mod message;
mod smtp;
mod templates;
mod transport;

pub use compose::{
    CompiledSend, ComposeError, Composer, OfferingInfo, PublicCopy, Recipient, SendTemplates,
    SignupToConfirm,
};
pub use dkim::{Dkim, DkimAlgorithm, DkimRecord, generate_key, key_file_for, record_of_pem};
pub use message::{EmailContent, build_message, build_notice};
pub use templates::{TemplateError, Templates};
pub use transport::{RelayFault, RelayState, SendError, SendErrorKind, Transport};
