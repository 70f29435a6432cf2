//! Bucket-level questions `object_store` does not ask: is the store there
//! at all (HeadBucket, the probe a scan makes before it pulls), and does
//! the bucket have S3 Object Lock with a default retention
//! (GetObjectLockConfiguration). Both are single SigV4-signed requests,
//! signed by `object_store`'s own [`AwsAuthorizer`] with the credentials
//! its client resolved, and sent through its HTTP client with a short
//! timeout and no retries: a probe must answer in seconds, not after the
//! client's three minutes of backoff.

use std::time::Duration;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{
    HttpClient, HttpConnector as _, HttpErrorKind, HttpRequest, HttpRequestBody, ReqwestConnector,
};

/// How long a probe may take before the store counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the store answered a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The bucket answered (200).
    Up,
    /// No answer: connection refused or reset, a timeout, or a server
    /// error (5xx). Requests wait (`E_STORE_DOWN`).
    Down(String),
    /// The store answered and refused: wrong credentials (401/403), no
    /// such bucket (404), anything else. Waiting would not help.
    Refused(String),
}

/// The object lock state of the bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lock {
    /// Object lock enabled with a default retention (mode and period as
    /// the bucket says, e.g. `COMPLIANCE`, `30 days`).
    Retained { mode: String, period: String },
    /// Object lock enabled but no default retention: new objects are not
    /// protected unless each upload asks.
    NoDefaultRetention,
    /// The bucket has no object lock configuration.
    Disabled,
    /// The server does not implement object lock (501 NotImplemented:
    /// Garage 2.x).
    NotImplemented,
    /// Something else; the detail says what.
    Unknown { detail: String },
}

impl Lock {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Lock::Retained { mode, period } => format!("object lock on, default retention {mode} for {period}"),
            Lock::NoDefaultRetention => "object lock on, but no default retention (objects are not protected)".into(),
            Lock::Disabled => {
                "object lock off for this bucket (it can only be turned on when a bucket is created)".into()
            }
            Lock::NotImplemented => {
                "the server does not implement S3 object lock (Garage does not; see the README for what protects \
                 backups there)"
                    .into()
            }
            Lock::Unknown { detail } => format!("object lock state unknown: {detail}"),
        }
    }
}

/// Signed bucket requests (module docs).
pub struct Bucket<'a> {
    pub client: &'a AmazonS3,
    pub endpoint: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
}

impl Bucket<'_> {
    /// Send one signed request to `<endpoint>/<bucket>?<query>`: the
    /// status and body, or why there was none.
    async fn send(&self, method: &str, query: &str) -> Result<(u16, String), (HttpErrorKind, String)> {
        let creds = self
            .client
            .credentials()
            .get_credential()
            .await
            .map_err(|e| (HttpErrorKind::Unknown, format!("no credentials: {e}")))?;
        let http: HttpClient = ReqwestConnector::default()
            .connect(
                &object_store::ClientOptions::new()
                    .with_timeout(PROBE_TIMEOUT)
                    .with_connect_timeout(PROBE_TIMEOUT)
                    .with_allow_http(self.endpoint.starts_with("http://")),
            )
            .map_err(|e| (HttpErrorKind::Unknown, e.to_string()))?;
        let mut url = format!("{}/{}", self.endpoint.trim_end_matches('/'), self.bucket);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.method_mut() = method.parse().map_err(|_| (HttpErrorKind::Unknown, format!("method {method}")))?;
        *req.uri_mut() = url.parse().map_err(|_| (HttpErrorKind::Unknown, "the endpoint is not a URL".to_owned()))?;
        AwsAuthorizer::new(&creds, "s3", self.region).authorize(&mut req, None);
        let resp = tokio::time::timeout(PROBE_TIMEOUT, http.execute(req))
            .await
            .map_err(|_| (HttpErrorKind::Timeout, format!("no answer within {} s", PROBE_TIMEOUT.as_secs())))?
            .map_err(|e| (e.kind(), e.to_string()))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(PROBE_TIMEOUT, resp.into_body().bytes())
            .await
            .map_err(|_| (HttpErrorKind::Timeout, "the answer stalled".to_owned()))?
            .map_err(|e| (e.kind(), e.to_string()))?;
        Ok((status, String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned()))
    }

    /// HeadBucket: is the store there, and does it take the node's
    /// credentials?
    pub async fn probe(&self) -> Health {
        match self.send("HEAD", "").await {
            Ok((200, _)) => Health::Up,
            Ok((s, _)) if s >= 500 => Health::Down(format!("the server answered {s}")),
            Ok((401 | 403, _)) => Health::Refused("the store refused the node's credentials (403)".into()),
            Ok((404, _)) => Health::Refused("the bucket does not exist (404)".into()),
            Ok((s, _)) => Health::Refused(format!("the store answered {s}")),
            Err((_, why)) => Health::Down(why),
        }
    }

    /// GetObjectLockConfiguration (module docs).
    pub async fn lock(&self) -> Lock {
        match self.send("GET", "object-lock").await {
            Ok((200, body)) => parse_lock(&body),
            Ok((501, _)) => Lock::NotImplemented,
            Ok((_, body)) if body.contains("NotImplemented") => Lock::NotImplemented,
            Ok((404, body)) if body.contains("ObjectLockConfigurationNotFound") => Lock::Disabled,
            Ok((s, body)) => Lock::Unknown { detail: format!("the server answered {s}: {}", code_of(&body)) },
            Err((_, why)) => Lock::Unknown { detail: why },
        }
    }
}

/// The `<Code>` of an S3 error body (never the whole body: it may echo
/// request details).
fn code_of(body: &str) -> String {
    tag(body, "Code").unwrap_or_else(|| "no error code".into())
}

fn tag(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    let v = body[start..end].trim();
    v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-').then(|| v.to_owned())
}

/// An `ObjectLockConfiguration` document.
fn parse_lock(body: &str) -> Lock {
    if tag(body, "ObjectLockEnabled").as_deref() != Some("Enabled") {
        return Lock::Disabled;
    }
    let Some(mode) = tag(body, "Mode") else { return Lock::NoDefaultRetention };
    let period = match (tag(body, "Days"), tag(body, "Years")) {
        (Some(d), _) => format!("{d} days"),
        (None, Some(y)) => format!("{y} years"),
        (None, None) => return Lock::NoDefaultRetention,
    };
    Lock::Retained { mode, period }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_documents() {
        let on = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
                  <Mode>COMPLIANCE</Mode><Days>30</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
        assert_eq!(parse_lock(on), Lock::Retained { mode: "COMPLIANCE".into(), period: "30 days".into() });
        let bare = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>";
        assert_eq!(parse_lock(bare), Lock::NoDefaultRetention);
        assert_eq!(parse_lock("<ObjectLockConfiguration/>"), Lock::Disabled);
        assert_eq!(code_of("<Error><Code>AccessDenied</Code><Message>x</Message></Error>"), "AccessDenied");
        assert_eq!(code_of("<Error><Code>a b<script></Code></Error>"), "no error code");
    }
}
