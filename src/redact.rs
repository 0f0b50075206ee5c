//! The one place a URI is turned into text for an error, a log line, a span or a
//! `Debug`: credentials in it (`user:password@`, `token@`) never reach any of them.
//!
//! Every message of this crate that repeats a URI (a request's, a proxy's, one that did
//! not even parse) goes through [`uri`] or [`text`]; the integration crates use them too.
//! A new message cannot forget: there is no other helper that formats a URI.

use std::borrow::Cow;
use std::fmt;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// How much of a URI a message repeats: longer ones are clipped (with `…`).
const SHOWN: usize = 120;

/// A parsed URI for messages: its userinfo masked (`user:***@host`, or `***@host` when
/// there is no `:`), clipped to 120 characters.
///
/// A URI with an `@` after its authority is masked up to that `@` too: in
/// `http://admin:pass/word@host/` the parser sees host `admin`, port `pass` and a path,
/// but the user meant a password. That may hide part of a path with an `@` in it
/// (`/@scope/pkg`) in a message; it never shows a password.
///
/// ```
/// let uri: http::Uri = "http://admin:hunter2@example.com/x".parse().unwrap();
/// assert_eq!(rtlocal::redact::uri(&uri), "http://admin:***@example.com/x");
/// let uri: http::Uri = "http://admin:hunter2/x@example.com/".parse().unwrap();
/// assert_eq!(rtlocal::redact::uri(&uri), "http://admin:***@example.com/");
/// ```
pub fn uri(uri: &Uri) -> String {
    text(&uri.to_string())
}

/// Any text that was meant as a URI — one that parses or not, a proxy setting, an
/// environment variable — for messages: everything between `scheme://` (or the start,
/// without one) and the last `@` is masked, clipped to 120 characters.
///
/// Text that does not parse gives no reliable authority (`http://u:p/w@host` — a
/// password with a `/` in it), so the mask runs to the *last* `@` of the whole text:
/// it may hide more than the credentials, never less.
///
/// ```
/// // A space: this does not parse, and the password is still not shown.
/// let shown = rtlocal::redact::text("http://admin:hunter2 x@127.0.0.1:1/");
/// assert_eq!(shown, "http://admin:***@127.0.0.1:1/");
/// assert_eq!(rtlocal::redact::text("http://u:p/w@h/"), "http://u:***@h/");
/// assert_eq!(rtlocal::redact::text("http://h/path"), "http://h/path");
/// ```
pub fn text(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let masked = match rest.rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{scheme}{}{}",
            mask_userinfo(&rest[..at]),
            &rest[at..]
        )),
        None => Cow::Borrowed(text),
    };
    clip(&masked).into_owned()
}

/// `user:password` → `user:***`; anything without a `:` (a token) → `***`.
fn mask_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        // The user name is kept only when it is plainly one (no separator in it).
        Some((user, _)) if !user.contains(['/', '?', '#', ' ']) => format!("{user}:***"),
        _ => "***".to_owned(),
    }
}

/// Whether a header carries a secret: `Authorization`, `Proxy-Authorization`, `Cookie`,
/// `Set-Cookie`, or a value marked [sensitive](HeaderValue::set_sensitive).
pub fn is_secret_header(name: &HeaderName, value: &HeaderValue) -> bool {
    name == AUTHORIZATION
        || name == PROXY_AUTHORIZATION
        || name == COOKIE
        || name == SET_COOKIE
        || value.is_sensitive()
}

/// Headers for `Debug` output: every name, the values of secret ones
/// ([`is_secret_header`]) shown as `***`.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "Bearer s3cret".parse().unwrap());
/// headers.insert("accept", "text/plain".parse().unwrap());
/// let shown = format!("{:?}", rtlocal::redact::headers(&headers));
/// assert!(shown.contains("\"authorization\": \"***\"") && shown.contains("text/plain"));
/// assert!(!shown.contains("s3cret"));
/// ```
pub fn headers(headers: &HeaderMap) -> impl fmt::Debug + '_ {
    Headers(headers)
}

struct Headers<'a>(&'a HeaderMap);

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_secret_header(name, value) {
                map.entry(&name.as_str(), &"***");
            } else {
                map.entry(&name.as_str(), value);
            }
        }
        map.finish()
    }
}

/// `s` clipped to [`SHOWN`] bytes on a character boundary, with `…` when cut.
pub(crate) fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= SHOWN {
        return Cow::Borrowed(s);
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_uris_lose_their_credentials_only() {
        let u: Uri = "https://user:s3cret@h:8443/p?q=1".parse().expect("parses");
        assert_eq!(uri(&u), "https://user:***@h:8443/p?q=1");
        let u: Uri = "http://tok3n@h/".parse().expect("parses");
        assert_eq!(uri(&u), "http://***@h/");
        let u: Uri = "http://h/a@b".parse().expect("parses");
        assert_eq!(uri(&u), "http://***@b");
        let u: Uri = "http://h/a?b=1".parse().expect("parses");
        assert_eq!(uri(&u), "http://h/a?b=1");
    }

    #[test]
    fn unparsable_text_never_shows_a_password() {
        for (raw, secret) in [
            ("http://admin:hunter2 x@127.0.0.1:1/", "hunter2"),
            ("http://u:p?ss@h/", "p?ss"),
            ("http://u:pa#ss@h/", "pa#ss"),
            ("u:hunter2@h:1", "hunter2"),
            ("http://a:b@c:d@e/", "b@c:d"),
            ("http://user name:pw x@h", "pw x"),
        ] {
            let shown = text(raw);
            assert!(!shown.contains(secret), "{raw} -> {shown}");
            assert!(shown.contains("***@"), "{raw} -> {shown}");
        }
        assert_eq!(text("not a uri"), "not a uri");
    }

    #[test]
    fn long_text_is_clipped_on_a_char_boundary() {
        let long = format!("http://h/{}", "é".repeat(200));
        let shown = text(&long);
        assert!(shown.ends_with('…') && shown.len() <= SHOWN + '…'.len_utf8());
    }
}
