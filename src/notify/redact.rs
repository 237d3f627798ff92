//! Making text log-safe: cutting long service answers short, masking secrets and
//! the passwords of URLs.
//!
//! Every [`super::SinkError`] message of the cloud sinks passes through here, because
//! error text partly comes from outside (a service's answer, a library's error chain)
//! and rwsgi promises that no secret reaches a log line.

/// What a masked secret reads as.
pub(crate) const MASK: &str = "***";

/// Cuts `s` to at most `max` bytes (on a character boundary), marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Replaces every occurrence of each non-empty secret in `text` by [`MASK`]: a last
/// line of defence for secrets that a library might echo back.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, MASK);
    }
    out
}

/// `url` with the password (and a lone user-info, which some clients read as a
/// password) replaced by `***`, and any `password=` query value masked too. Works
/// on malformed URLs as well, since those are exactly the ones that end up in error
/// messages.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    // The user-info is taken to end at the last '@' of the whole URL: a password
    // its owner did not percent-encode may contain '@', '/', '?' or '#', and
    // masking too much is harmless where masking too little is not.
    let (authority, tail) = match rest.rfind('@') {
        Some(at) => {
            let masked = match rest[..at].split_once(':') {
                Some((user, _password)) => format!("{user}:{MASK}"),
                None => MASK.to_string(),
            };
            (format!("{masked}@"), &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                    {
                        format!("{k}={MASK}")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_text_and_cuts_on_char_boundaries() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("ééé".into(), 3), "é…");
    }

    #[test]
    fn scrub_masks_every_occurrence() {
        assert_eq!(scrub("a pw b pw", &["pw", ""]), "a *** b ***");
    }

    #[test]
    fn redact_url_masks_passwords_everywhere() {
        let cases = [
            ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
            ("rediss://user:pw@host", "rediss://user:***@host"),
            ("redis://pw@host:6379", "redis://***@host:6379"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            ("redis://u:p@ss:w@rd@host/1", "redis://u:***@host/1"),
            (
                "redis://host/0?password=pw&db=1",
                "redis://host/0?password=***&db=1",
            ),
            ("redis://:pa/ss@host:1/0", "redis://:***@host:1/0"),
            ("redis://:pa?s#s@host", "redis://:***@host"),
            ("host:pw@x", "host:***@x"),
            ("", ""),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }
}
