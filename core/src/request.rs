//! The request as the provider sent it, and the lazily parsed views of it.
//!
//! Verification must see the exact wire bytes, so [`Request`] holds the raw body,
//! the headers in order (duplicates kept, values as bytes), the full public URL and
//! the remote address. [`Event`] wraps a request with what the pipeline derives from
//! it on demand — the JSON body and the query parameters — parsed at most once, and
//! only if a verifier, key, target or rule asks. An HMAC-only receiver never parses
//! its body.

use std::cell::OnceCell;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Request headers in wire order. Names compare case-insensitively; values are
/// bytes because HTTP allows non-UTF-8 (obs-text) in them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push((name.into(), value.into()));
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` if it is UTF-8 — `Err` names the problem.
    pub fn get(&self, name: &str) -> Result<&str, HeaderProblem> {
        let bytes = self.get_bytes(name).ok_or(HeaderProblem::Missing)?;
        std::str::from_utf8(bytes).map_err(|_| HeaderProblem::NotUtf8)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The names and values in wire order, as owned pairs (what the runtimes
    /// store and forward).
    pub fn into_pairs(self) -> Vec<(String, Vec<u8>)> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    Missing,
    NotUtf8,
}

/// One request exactly as received.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The full public URL the provider called, query included. Twilio, Square and
    /// HubSpot sign it, so the host rebuilds it from its public base URL.
    pub url: &'a str,
    pub headers: &'a Headers,
    pub body: &'a [u8],
    pub remote_addr: Option<IpAddr>,
    /// When the request arrived, in Unix seconds. Core never reads a clock.
    pub received_at: i64,
}

impl Request<'_> {
    /// The query string of the URL, without `?` and fragment.
    pub fn query_string(&self) -> &str {
        let after = self.url.split_once('?').map_or("", |(_, q)| q);
        after.split_once('#').map_or(after, |(q, _)| q)
    }
}

/// Why the body cannot be read as JSON; conditions that need JSON fail with this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotJson(pub String);

/// A request plus lazily derived views of it.
#[derive(Debug)]
pub struct Event<'a> {
    pub request: Request<'a>,
    json: OnceCell<Result<Value, NotJson>>,
    query: OnceCell<Vec<(String, String)>>,
}

impl<'a> Event<'a> {
    pub fn new(request: Request<'a>) -> Self {
        Self {
            request,
            json: OnceCell::new(),
            query: OnceCell::new(),
        }
    }

    /// The body as JSON, parsed on first use.
    pub fn json(&self) -> Result<&Value, &NotJson> {
        self.json
            .get_or_init(|| {
                if self.request.body.is_empty() {
                    return Err(NotJson("the body is empty".to_owned()));
                }
                serde_json::from_slice(self.request.body)
                    .map_err(|e| NotJson(format!("the body is not JSON ({e})")))
            })
            .as_ref()
    }

    /// Query parameters in order, percent-decoded.
    pub fn query(&self) -> &[(String, String)] {
        self.query
            .get_or_init(|| parse_form(self.request.query_string().as_bytes()))
    }

    /// The first query parameter of `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Result<&str, HeaderProblem> {
        self.request.headers.get(name)
    }
}

/// Whether a header or query parameter of this name carries a credential or a
/// signature: such values stay out of traces and are not forwarded into sandboxes
/// unless a receiver asks for them.
pub fn is_credential(name: &str) -> bool {
    const WORDS: [&str; 9] = [
        "authorization",
        "cookie",
        "token",
        "secret",
        "signature",
        "password",
        "key",
        "sig",
        "hmac",
    ];
    let name = name.to_ascii_lowercase();
    WORDS.iter().any(|w| name.contains(w))
}

/// Parses `application/x-www-form-urlencoded` (also query strings): `+` is a space,
/// `%XX` a byte; invalid escapes are kept literally; invalid UTF-8 is replaced.
pub fn parse_form(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(input: &[u8], plus: bool) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' if plus => out.push(b' '),
            b'%' if i + 2 < input.len() => match (hex_val(input[i + 1]), hex_val(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            parse_form(b"a=1&b=hello+world&c=%2Fx%3F&d&e=%zz&f=%4"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "hello world".into()),
                ("c".into(), "/x?".into()),
                ("d".into(), "".into()),
                ("e".into(), "%zz".into()),
                ("f".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn headers_are_case_insensitive_and_keep_the_first() {
        let h: Headers = [("X-A", "1"), ("x-a", "2")].into_iter().collect();
        assert_eq!(h.get("x-A"), Ok("1"));
        assert_eq!(h.get("nope"), Err(HeaderProblem::Missing));
        let mut h = Headers::new();
        h.push("bin", vec![0xff]);
        assert_eq!(h.get("bin"), Err(HeaderProblem::NotUtf8));
    }

    #[test]
    fn query_string_ignores_fragment() {
        let headers = Headers::new();
        let req = Request {
            method: "POST",
            url: "https://h/x?a=1#frag",
            headers: &headers,
            body: b"",
            remote_addr: None,
            received_at: 0,
        };
        assert_eq!(req.query_string(), "a=1");
        assert_eq!(Event::new(req).query_param("a"), Some("1"));
    }
}
