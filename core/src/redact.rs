//! Credentials out of what is kept and shown: the header and query parameter
//! names a receiver's auth tree reads as a credential, and the functions that
//! blank their values in a request.
//!
//! A header named by `header_equals`, an `hmac` signature source, a `jwt` token
//! source, `Authorization` for `basic`/`bearer_static`/`jwt`, a provider
//! preset's signature header, and a query parameter named by `query_equals` or
//! an hmac/jwt query source: once the request is authenticated, none of their
//! values is needed again, and any of them replayed or read could be abused. So
//! the runtimes store, show and forward the request with these values replaced
//! by [`REDACTED`]. (Header names that merely look like credentials are hidden
//! when shown by [`crate::request::is_credential`] as well.)

use crate::request::percent_decode;

/// What a redacted value reads as.
pub const REDACTED: &str = "<redacted>";

/// The header and query parameter names an auth tree reads as credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Header names, lowercase.
    pub headers: Vec<String>,
    /// Query parameter names, as decoded.
    pub query: Vec<String>,
}

impl Credentials {
    pub fn add_header(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
    }

    pub fn add_query(&mut self, name: &str) {
        if !self.query.iter().any(|q| q == name) {
            self.query.push(name.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty()
    }

    /// Whether `name` is a credential header.
    pub fn header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Replaces the value of every credential header with [`REDACTED`].
    pub fn redact_headers(&self, headers: &mut [(String, Vec<u8>)]) {
        for (name, value) in headers.iter_mut() {
            if self.header(name) {
                *value = REDACTED.as_bytes().to_vec();
            }
        }
    }

    /// The URL with the value of every credential query parameter replaced by
    /// [`REDACTED`]; the rest, and the order, as it was.
    pub fn redact_url(&self, url: &str) -> String {
        let Some((base, query)) = url.split_once('?') else {
            return url.to_owned();
        };
        if self.query.is_empty() {
            return url.to_owned();
        }
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                if self.query.contains(&percent_decode(name.as_bytes(), true)) {
                    format!("{name}={REDACTED}")
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        let mut out = format!("{base}?{}", parts.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        let mut c = Credentials::default();
        c.add_header("X-Ops-Code");
        c.add_header("x-ops-code");
        c.add_query("token");
        c
    }

    #[test]
    fn a_receiver_names_what_its_auth_tree_reads() {
        let receiver = |auth: serde_json::Value| {
            crate::Receiver::from_json(&serde_json::json!({
                "name": "r", "auth": auth,
                "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "box"},
                "rules": [{"actions": [{"action_type": "resume_sandbox"}]}]
            }))
            .unwrap()
            .credentials()
        };
        let secret = serde_json::json!({"name": "s", "value": "0123456789abcdef"});
        let c = receiver(serde_json::json!({"auth_type": "any", "verifiers": [
            {"auth_type": "provider", "provider": "github", "secret": secret},
            {"auth_type": "header_equals", "name": "X-Ops-Code", "secret": secret},
            {"auth_type": "query_equals", "name": "token", "secret": secret},
            {"auth_type": "bearer_static", "secret": secret},
        ]}));
        assert_eq!(
            c.headers,
            ["x-hub-signature-256", "x-ops-code", "authorization"]
        );
        assert_eq!(c.query, ["token"]);
        assert!(receiver(serde_json::json!({"auth_type": "none"})).is_empty());
    }

    #[test]
    fn headers_are_matched_without_case_and_blanked() {
        let c = creds();
        assert_eq!(c.headers, ["x-ops-code"]);
        let mut h = vec![
            ("X-OPS-CODE".to_owned(), b"hunter2".to_vec()),
            ("Content-Type".to_owned(), b"application/json".to_vec()),
        ];
        c.redact_headers(&mut h);
        assert_eq!(h[0].1, REDACTED.as_bytes());
        assert_eq!(h[1].1, b"application/json");
    }

    #[test]
    fn query_values_are_blanked_wherever_they_stand() {
        let c = creds();
        assert_eq!(
            c.redact_url("https://gw/hooks/r?a=1&token=s3cret&to%6Ben=x&b#frag"),
            "https://gw/hooks/r?a=1&token=<redacted>&to%6Ben=<redacted>&b#frag"
        );
        assert_eq!(c.redact_url("https://gw/hooks/r"), "https://gw/hooks/r");
        assert_eq!(
            Credentials::default().redact_url("https://gw/h?token=s"),
            "https://gw/h?token=s"
        );
        assert_eq!(c.redact_url("/h?token"), "/h?token=<redacted>");
    }
}
