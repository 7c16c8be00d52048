//! Redis URLs as text: a password hidden for messages, a password from the environment
//! put in. Pure string work, so configuration can check `redis_url` without the queue;
//! `queue` re-exports both.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Strips a password from a Redis URL for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        // Not a URL but with an `@`: whatever comes before it may be a password.
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// `url` with `password` as its password (percent-encoded; a user name in the URL is
/// kept, a password replaced); `None` if `url` is not `redis://` or `rediss://`.
pub fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(
        scheme,
        "redis"
            | "rediss"
            | "redis+sentinel"
            | "rediss+sentinel"
            | "redis+cluster"
            | "rediss+cluster"
    ) {
        return None;
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (userinfo.split(':').next().unwrap_or(""), host),
        None => ("", authority),
    };
    let encoded = utf8_percent_encode(password, USERINFO);
    Some(format!("{scheme}://{user}:{encoded}@{host}{tail}"))
}

/// What stays as it is in an encoded password: RFC 3986's unreserved characters.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("redis:/:hunter2@h:6379"), "***@h:6379");
    }

    #[test]
    fn a_password_from_the_environment_goes_into_the_url_encoded() {
        assert_eq!(
            with_password("redis://127.0.0.1:6379/2", "p@ss:w/rd").as_deref(),
            Some("redis://:p%40ss%3Aw%2Frd@127.0.0.1:6379/2")
        );
        assert_eq!(
            with_password("rediss://app:old@h:1", "new").as_deref(),
            Some("rediss://app:new@h:1")
        );
        assert_eq!(with_password("http://h", "x"), None);
    }
}
