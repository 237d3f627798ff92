//! The HTTP rules both paths apply to a request head, in one place: the own path
//! (`own.rs`) checks a head here while parsing it and hands one that breaks a rule to
//! hyper, whose service (`service.rs`) checks it here again and answers with the
//! [`Refusal`]'s status. A new rule on request heads (Host validation, say) goes into
//! [`check`], and both paths apply it.

use http::Uri;

use crate::config::Limits;
use crate::contract::{plain, Reply};

/// Why a head is refused, with gunicorn's status codes: 400 for the request line,
/// 431 for header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RequestLineTooLarge,
    TooManyFields,
    FieldTooLarge,
}

impl Refusal {
    /// The answer to a refused request; the connection closes after it.
    pub fn reply(self) -> Reply {
        match self {
            Refusal::RequestLineTooLarge => {
                plain(400, "Bad Request: request line is too large\n", true)
            }
            Refusal::TooManyFields => plain(
                431,
                "Request Header Fields Too Large: too many header fields\n",
                true,
            ),
            Refusal::FieldTooLarge => plain(
                431,
                "Request Header Fields Too Large: a header field is too large\n",
                true,
            ),
        }
    }
}

/// The length of a request target as sent: origin form (`/path?query`), or
/// absolute form (`http://authority/path?query`).
pub fn target_len(uri: &Uri) -> usize {
    uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(1)
        + uri.authority().map(|a| a.as_str().len() + 8).unwrap_or(0)
}

/// Checks a head against gunicorn's limits: `--limit-request-line` (the method, the
/// target and ` HTTP/1.1`), `--limit-request-fields` and
/// `--limit-request-field_size` (`name: value`). `fields` are the `count` (name,
/// value) pairs as sent.
pub fn check<'a>(
    method: &str,
    target_len: usize,
    count: usize,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    limits: &Limits,
) -> Result<(), Refusal> {
    if method.len() + 1 + target_len + 9 > limits.request_line {
        return Err(Refusal::RequestLineTooLarge);
    }
    if count > limits.request_fields {
        return Err(Refusal::TooManyFields);
    }
    for (name, value) in fields {
        if name.len() + 2 + value.len() > limits.request_field_size {
            return Err(Refusal::FieldTooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 30,
        request_fields: 2,
        request_field_size: 10,
    };

    fn judge(target: &str, fields: &[(&str, &str)]) -> Result<(), Refusal> {
        let uri: Uri = target.parse().unwrap();
        let pairs = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        check("GET", target_len(&uri), fields.len(), pairs, &LIMITS)
    }

    #[test]
    fn limits_count_as_gunicorn_does() {
        // "GET " + target + " HTTP/1.1": 13 bytes around the target.
        assert_eq!(judge(&format!("/{}", "a".repeat(16)), &[]), Ok(()));
        assert_eq!(
            judge(&format!("/{}", "a".repeat(17)), &[]),
            Err(Refusal::RequestLineTooLarge)
        );
        // The absolute form counts its scheme and authority.
        assert_eq!(
            judge("http://example.com/abc", &[]),
            Err(Refusal::RequestLineTooLarge)
        );
        assert_eq!(
            judge("/", &[("a", "1"), ("b", "2"), ("c", "3")]),
            Err(Refusal::TooManyFields)
        );
        // "name: value" without the line end.
        assert_eq!(judge("/", &[("abc", "defgh")]), Ok(()));
        assert_eq!(
            judge("/", &[("abc", "defghi")]),
            Err(Refusal::FieldTooLarge)
        );
    }

    #[test]
    fn refusals_answer_with_gunicorns_codes_and_close() {
        for (r, code) in [
            (Refusal::RequestLineTooLarge, 400),
            (Refusal::TooManyFields, 431),
            (Refusal::FieldTooLarge, 431),
        ] {
            let reply = r.reply();
            assert_eq!(reply.status.as_u16(), code);
            assert!(reply
                .headers
                .iter()
                .any(|(n, v)| n == http::header::CONNECTION && v == "close"));
        }
    }
}
