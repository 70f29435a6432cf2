//! Standard output of `ferry-node` commands: every line and JSON document a
//! command prints goes through here ([`ferry_text::stdout`]: shown once and
//! safely, and a reader that goes away (`| head`) ends output quietly).

use serde::Serialize;

pub use ferry_text::stdout::{err_line, line};

/// Prints `value` as pretty-printed, pure-ASCII JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    Ok(ferry_text::stdout::json(&serde_json::to_string_pretty(value)?)?)
}

/// Prints `value` as one line of pure-ASCII JSON (JSON lines).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    Ok(ferry_text::stdout::json(&serde_json::to_string(value)?)?)
}
