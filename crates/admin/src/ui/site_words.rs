//! Checks what a person typed as a site (`pinterest.com`, `bbc.co.uk/bitesize`) before
//! it reaches the policy, and says what is wrong in words about that entry
//! ("`pinterest` is not a domain: did you mean pinterest.com?"), so that a refused
//! form never shows a policy-file line or key. The policy's own compile stays the
//! final check; this one only makes its answers readable.

use std::net::IpAddr;

/// The entry as it will be written (scheme dropped, host lower-cased), or what is
/// wrong with it.
pub fn check_site(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the site is empty".to_owned());
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{trimmed}` has a space in it: write one site per line"
        ));
    }
    let without_scheme = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let (host, path) = match without_scheme.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (without_scheme, None),
    };
    let host = host.trim_end_matches('.').to_lowercase();
    if let Some(rest) = host.strip_prefix("*.") {
        return Err(format!(
            "write `{rest}` without `*.`: a site always covers its subdomains"
        ));
    }
    if host.parse::<IpAddr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<IpAddr>().is_ok())
    {
        return Ok(joined(&host, path));
    }
    if host.contains(':') {
        return Err(format!(
            "`{trimmed}`: leave out the port (`:{}`); a site covers every port",
            host.rsplit(':').next().unwrap_or_default()
        ));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    };
    if !host.contains('.') {
        return Err(if label_ok(&host) {
            format!("`{host}` is not a domain: did you mean {host}.com?")
        } else {
            format!("`{trimmed}` is not a domain: write a site like example.com")
        });
    }
    if !host.split('.').all(label_ok) {
        return Err(format!(
            "`{trimmed}` is not a domain: a site is written like example.com or example.com/page, with letters, digits and - only"
        ));
    }
    Ok(joined(&host, path))
}

fn joined(host: &str, path: Option<&str>) -> String {
    match path {
        Some(path) if !path.is_empty() => format!("{host}/{path}"),
        _ => host.to_owned(),
    }
}

/// Checks every line of a list; the first problem names its line.
pub fn check_lines(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match check_site(line) {
            Ok(entry) => out.push(entry),
            Err(why) if text.lines().filter(|l| !l.trim().is_empty()).count() > 1 => {
                return Err(format!("line {}: {why}", i + 1));
            }
            Err(why) => return Err(why),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sites_are_checked_in_words() {
        assert_eq!(
            check_site("pinterest"),
            Err("`pinterest` is not a domain: did you mean pinterest.com?".to_owned())
        );
        assert_eq!(
            check_site(" https://Pinterest.com/ideas "),
            Ok("pinterest.com/ideas".to_owned())
        );
        assert_eq!(check_site("10.0.0.5"), Ok("10.0.0.5".to_owned()));
        assert!(
            check_site("*.bbc.co.uk")
                .unwrap_err()
                .contains("without `*.`")
        );
        assert!(check_site("bbc co uk").unwrap_err().contains("space"));
        assert!(
            check_site("bbc..co.uk")
                .unwrap_err()
                .contains("not a domain")
        );
        assert!(check_site("bbc.co.uk:8080").unwrap_err().contains("port"));
    }

    #[test]
    fn lists_name_the_bad_line() {
        assert_eq!(
            check_lines("bbc.co.uk\n\nwikipedia"),
            Err("line 3: `wikipedia` is not a domain: did you mean wikipedia.com?".to_owned())
        );
        assert_eq!(
            check_lines("a.test\nb.test/x"),
            Ok(vec!["a.test".to_owned(), "b.test/x".to_owned()])
        );
    }
}
