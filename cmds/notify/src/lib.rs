//! Mail to administrators.
//!
//! Placeholder configuration type; sending, grouping and rate limiting are
//! implemented in [`mailer`].

pub mod mailer;

pub use mailer::{MailConfig, Mailer};
