//! SafeSearch and YouTube restrictions without decryption: requests for the search
//! engines' and YouTube's host names are connected to the providers' enforced
//! endpoints (`forcesafesearch.google.com`, `restrict.youtube.com`, ...) while the
//! requested host name is kept in `Host` and in the TLS SNI, which is how the
//! providers document network-level enforcement. For plain HTTP the request is also
//! marked with the providers' parameters and headers.

use http::HeaderValue;
use http::header::HeaderMap;
use safegate_policy::Snapshot;

use crate::auth::Identity;

/// What to enforce for one person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// Google, Bing and DuckDuckGo SafeSearch.
    pub safesearch: bool,
    /// YouTube Restricted Mode.
    pub youtube: YouTubeMode,
}

impl Restrictions {
    /// What the policy enforces for `identity`.
    pub fn for_identity(snapshot: &Snapshot, identity: &Identity) -> Self {
        let policy = snapshot.safesearch(&identity.subject());
        Self {
            safesearch: policy.safesearch,
            youtube: match policy.youtube {
                safegate_policy::YouTubeMode::Off => YouTubeMode::Off,
                safegate_policy::YouTubeMode::Moderate => YouTubeMode::Moderate,
                safegate_policy::YouTubeMode::Strict => YouTubeMode::Strict,
            },
        }
    }
}

/// YouTube Restricted Mode level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum YouTubeMode {
    /// No restriction.
    #[default]
    Off,
    /// Moderate restricted mode.
    Moderate,
    /// Strict restricted mode.
    Strict,
}

/// Which service a host belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Google,
    Bing,
    DuckDuckGo,
    YouTube,
}

const YOUTUBE_HOSTS: [&str; 5] = [
    "www.youtube.com",
    "m.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
];

fn service_of(host: &str) -> Option<Service> {
    let host = host.trim_end_matches('.');
    if YOUTUBE_HOSTS.contains(&host) || host == "youtube.com" {
        return Some(Service::YouTube);
    }
    match host {
        "bing.com" | "www.bing.com" => return Some(Service::Bing),
        "duckduckgo.com" | "www.duckduckgo.com" | "html.duckduckgo.com" => {
            return Some(Service::DuckDuckGo);
        }
        _ => {}
    }
    let rest = host.strip_prefix("www.").unwrap_or(host);
    let tld = rest.strip_prefix("google.")?;
    is_google_country_suffix(tld).then_some(Service::Google)
}

/// `com`, `co.uk`, `de`, `com.au`, ...: the shapes of Google's search domains.
fn is_google_country_suffix(suffix: &str) -> bool {
    let labels: Vec<&str> = suffix.split('.').collect();
    let country = |label: &str| label.len() == 2 && label.bytes().all(|b| b.is_ascii_lowercase());
    match labels.as_slice() {
        ["com"] => true,
        [cc] => country(cc),
        ["com" | "co", cc] => country(cc),
        _ => false,
    }
}

/// The host name whose addresses a request for `host` must be connected to, when
/// `restrictions` apply to it.
pub fn enforced_endpoint(host: &str, restrictions: Restrictions) -> Option<&'static str> {
    match service_of(host)? {
        Service::Google if restrictions.safesearch => Some("forcesafesearch.google.com"),
        Service::Bing if restrictions.safesearch => Some("strict.bing.com"),
        Service::DuckDuckGo if restrictions.safesearch => Some("safe.duckduckgo.com"),
        Service::YouTube => match restrictions.youtube {
            YouTubeMode::Off => None,
            YouTubeMode::Moderate => Some("restrictmoderate.youtube.com"),
            YouTubeMode::Strict => Some("restrict.youtube.com"),
        },
        _ => None,
    }
}

/// For a plain-HTTP request: the query with the provider's SafeSearch parameter
/// forced (`None` when nothing changes), and headers added to the request.
pub fn mark_plain_request(
    host: &str,
    query: Option<&str>,
    headers: &mut HeaderMap,
    restrictions: Restrictions,
) -> Option<String> {
    let service = service_of(host)?;
    let (name, value) = match service {
        Service::YouTube => {
            let level = match restrictions.youtube {
                YouTubeMode::Off => return None,
                YouTubeMode::Moderate => "Moderate",
                YouTubeMode::Strict => "Strict",
            };
            headers.insert("youtube-restrict", HeaderValue::from_static(level));
            return None;
        }
        _ if !restrictions.safesearch => return None,
        Service::Google => ("safe", "active"),
        Service::Bing => ("adlt", "strict"),
        Service::DuckDuckGo => ("kp", "1"),
    };
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.push((name.to_owned(), value.to_owned()));
    Some(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Restrictions = Restrictions {
        safesearch: true,
        youtube: YouTubeMode::Strict,
    };

    #[test]
    fn endpoints_follow_the_providers_documentation() {
        assert_eq!(
            enforced_endpoint("www.google.com", ALL),
            Some("forcesafesearch.google.com")
        );
        assert_eq!(
            enforced_endpoint("www.google.co.uk", ALL),
            Some("forcesafesearch.google.com")
        );
        assert_eq!(
            enforced_endpoint("google.de", ALL),
            Some("forcesafesearch.google.com")
        );
        assert_eq!(
            enforced_endpoint("www.bing.com", ALL),
            Some("strict.bing.com")
        );
        assert_eq!(
            enforced_endpoint("duckduckgo.com", ALL),
            Some("safe.duckduckgo.com")
        );
        assert_eq!(
            enforced_endpoint("www.youtube.com", ALL),
            Some("restrict.youtube.com")
        );
        let moderate = Restrictions {
            safesearch: false,
            youtube: YouTubeMode::Moderate,
        };
        assert_eq!(
            enforced_endpoint("m.youtube.com", moderate),
            Some("restrictmoderate.youtube.com")
        );
        assert_eq!(enforced_endpoint("www.google.com", moderate), None);
        assert_eq!(enforced_endpoint("mail.google.com", ALL), None);
        assert_eq!(enforced_endpoint("google.evil.example", ALL), None);
        assert_eq!(
            enforced_endpoint("www.google.com", Restrictions::default()),
            None
        );
    }

    #[test]
    fn plain_requests_get_parameters_and_headers() {
        let mut headers = HeaderMap::new();
        let query =
            mark_plain_request("www.google.com", Some("q=cats&safe=off"), &mut headers, ALL);
        assert_eq!(query.as_deref(), Some("q=cats&safe=active"));
        let query = mark_plain_request("www.bing.com", None, &mut headers, ALL);
        assert_eq!(query.as_deref(), Some("adlt=strict"));
        let query = mark_plain_request("www.youtube.com", Some("v=1"), &mut headers, ALL);
        assert_eq!(query, None);
        assert_eq!(headers["youtube-restrict"], "Strict");
        assert_eq!(
            mark_plain_request("example.com", Some("q=1"), &mut headers, ALL),
            None
        );
    }
}
