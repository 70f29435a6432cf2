//! Mail configuration and transport.

use serde::Deserialize;

/// Where alert mail goes. Sender and recipients come from the
/// administrator's configuration only, never from client text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Recipients (administrators).
    pub to: Vec<String>,
    /// Sender address.
    pub from: String,
    /// `smtp://host:port` (plain, e.g. a local relay) — or use `sendmail`.
    #[serde(default)]
    pub smtp: Option<String>,
    /// Path of a sendmail binary, called as `sendmail -i -t`.
    #[serde(default)]
    pub sendmail: Option<std::path::PathBuf>,
}

/// Sends mail according to a [`MailConfig`].
#[derive(Debug, Clone)]
pub struct Mailer {
    pub config: MailConfig,
}
