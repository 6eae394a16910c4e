//! The `user:password@` part of a request's address never goes further than the
//! proxy: it is taken out of the address forwarded (so it is not in the connection
//! pool's key), and out of every address logged or shown on a page.

/// Takes the `user:password@` part out of `uri`, if it has one.
pub(crate) fn strip_userinfo(uri: &mut http::Uri) {
    let Some(authority) = uri.authority() else {
        return;
    };
    let Some((_, host)) = authority.as_str().rsplit_once('@') else {
        return;
    };
    let Ok(host) = http::uri::Authority::try_from(host) else {
        return;
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(host);
    if let Ok(stripped) = http::Uri::from_parts(parts) {
        *uri = stripped;
    }
}

/// `uri` as text without its `user:password@` part, for logs and pages.
pub(crate) fn target_without_userinfo(uri: &http::Uri) -> String {
    // Built from the parts as `Uri`'s Display writes them, without the formatter.
    let authority = uri
        .authority()
        .map(http::uri::Authority::as_str)
        .map(|authority| {
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host)
        });
    let mut text = String::with_capacity(uri.path().len() + 64);
    if let Some(scheme) = uri.scheme_str() {
        text.push_str(scheme);
        text.push_str("://");
    }
    text.push_str(authority.unwrap_or(""));
    text.push_str(uri.path());
    if let Some(query) = uri.query() {
        text.push('?');
        text.push_str(query);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_left_out_of_targets() {
        let uri: http::Uri = "http://alice:s3cret@example.org:8080/a?b=c"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(
            target_without_userinfo(&uri),
            "http://example.org:8080/a?b=c"
        );
        let uri: http::Uri = "example.org:443".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(target_without_userinfo(&uri), "example.org:443");
        let mut uri: http::Uri = "http://a:b@example.org/x?y"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        strip_userinfo(&mut uri);
        assert_eq!(uri.to_string(), "http://example.org/x?y");
    }

    #[test]
    fn targets_without_userinfo_read_as_the_uri_writes_itself() {
        for text in [
            "http://example.org",
            "http://example.org/",
            "https://x.test:8443/a/b?c=d&e",
            "http://example.org/?",
            "/just/a/path?q=1",
            "example.org:443",
            "*",
        ] {
            let uri: http::Uri = text.parse().unwrap_or_else(|_| unreachable!());
            assert_eq!(target_without_userinfo(&uri), uri.to_string(), "{text}");
        }
    }
}
