//! Client request pools: `pools/<node>/{i,C,P,F,E}<id>`.
//!
//! One pool per backup node (the seed's per-node request pools), so a node
//! that is down delays only its own deliveries. States, as in the seed:
//! `i` being written, `C` complete and not yet handled, `P` being handled
//! (module run, committed, pushing), `F` finished (the node acknowledged the
//! push). Ferry adds `E`: the client module failed permanently (a failing
//! pre command, a missing database); its reason is in `E<id>.why` and it is
//! reported, not retried; and `A`: a failed request an administrator
//! acknowledged (`ferry ack`), kept with its reason (`A<id>.why`) but no
//! longer reported as needing attention.

use std::path::Path;

use anyhow::Context as _;
use ferry_durable::Pool;
use serde::{Deserialize, Serialize};

/// Client pool states, in order.
pub const STATES: &[&str] = &["i", "C", "P", "F", "E", "A"];

/// The content of one client request file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub module: String,
    pub arg: String,
    /// The configured source this came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ClientRequest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("serialisable");
        v.push(b'\n');
        v
    }

    pub fn from_bytes(b: &[u8]) -> anyhow::Result<ClientRequest> {
        serde_json::from_slice(b).context("malformed client request file")
    }
}

/// Open the pool for `node`.
pub fn open(pool_dir: &Path) -> anyhow::Result<Pool> {
    Ok(Pool::open(pool_dir, STATES)?)
}

/// A new request id: UTC time (so pools list in arrival order) plus 8 random
/// hex digits (so two requests in one second never collide).
pub fn new_id() -> String {
    let now = jiff::Timestamp::now();
    let r: u32 = rand::random();
    format!("{}-{r:08x}", now.strftime("%Y%m%dT%H%M%SZ"))
}

/// The UTC second a request id was created in, if it has the usual form.
pub fn id_time(id: &str) -> Option<jiff::Timestamp> {
    let stamp = id.get(..16)?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_pool_ids_and_sort_by_time() {
        let a = new_id();
        assert!(ferry_durable::is_valid_id(&a), "{a}");
        assert!(id_time(&a).is_some());
        assert!("20261122T010203Z-00000000" < "20261122T010204Z-00000000");
    }

    #[test]
    fn record_round_trip() {
        let r = ClientRequest { module: "git".into(), arg: "/srv/git/a b.git".into(), source: None };
        assert_eq!(ClientRequest::from_bytes(&r.to_bytes()).unwrap(), r);
    }
}
