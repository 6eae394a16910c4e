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

/// YouTube's hosts: the five that network-level Restricted Mode is documented for
/// (`www.youtube.com`, `m.youtube.com`, `youtubei.googleapis.com`,
/// `youtube.googleapis.com`, `www.youtube-nocookie.com`, as repeated by filter vendors'
/// guides, e.g. Netsweeper's "How do I enforce YouTube restricted mode"), the bare
/// names, and `music.youtube.com`, which plays the same videos (issue 17).
const YOUTUBE_HOSTS: [&str; 8] = [
    "youtube.com",
    "youtube-nocookie.com",
    "www.youtube.com",
    "m.youtube.com",
    "music.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
];

/// Bing's search hosts, connected to `strict.bing.com`: `bing.com` and `www.bing.com`
/// (the names DNS-level guides map to it) and `cn.bing.com`, Bing's China front end,
/// which answers searches from anywhere (issue 17).
const BING_HOSTS: [&str; 3] = ["bing.com", "www.bing.com", "cn.bing.com"];

/// DuckDuckGo's search front ends, connected to `safe.duckduckgo.com` (whose searches
/// always have safe search on, as DuckDuckGo's help page "Safe search" says): the
/// full site and its `lite.` and `html.` versions (one service behind one set of
/// servers, picked by `Host`), and `safe.` itself, so `kp` is forced there too.
const DUCKDUCKGO_HOSTS: [&str; 5] = [
    "duckduckgo.com",
    "www.duckduckgo.com",
    "lite.duckduckgo.com",
    "html.duckduckgo.com",
    "safe.duckduckgo.com",
];

fn service_of(host: &str) -> Option<Service> {
    let host = host.trim_end_matches('.');
    if YOUTUBE_HOSTS.contains(&host) {
        return Some(Service::YouTube);
    }
    if BING_HOSTS.contains(&host) {
        return Some(Service::Bing);
    }
    if DUCKDUCKGO_HOSTS.contains(&host) {
        return Some(Service::DuckDuckGo);
    }
    let rest = host
        .strip_prefix("www.")
        .or_else(|| host.strip_prefix("images."))
        .unwrap_or(host);
    let tld = rest.strip_prefix("google.")?;
    is_google_search_suffix(tld).then_some(Service::Google)
}

/// The part after `google.` of Google's search domains: `com`, `cat`, and the
/// country shapes `de`, `co.uk`, `com.au`. Google lists its search domains at
/// <https://www.google.com/supported_domains> (187 in the copy the tests hold:
/// `.google.com`, `.google.ad`, ... `.google.co.zw`, `.google.cat`); every one is
/// `com`, `cat` or one of the country shapes, and matching the shapes keeps
/// country domains Google adds later covered too. Each is enforced for the bare
/// name, `www.` and `images.` (Google's SafeSearch lock is a DNS name,
/// `forcesafesearch.google.com`, that the search hosts are pointed at).
fn is_google_search_suffix(suffix: &str) -> bool {
    let labels: Vec<&str> = suffix.split('.').collect();
    let country = |label: &str| label.len() == 2 && label.bytes().all(|b| b.is_ascii_lowercase());
    match labels.as_slice() {
        ["com" | "cat"] => true,
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

    /// `https://www.google.com/supported_domains` (187 domains), as copied into a
    /// public repository's CSP configuration ("To update copy and paste the response
    /// from https://www.google.com/supported_domains").
    const GOOGLE_SUPPORTED_DOMAINS: &str = ".google.com .google.ad .google.ae .google.com.af \
        .google.com.ag .google.al .google.am .google.co.ao .google.com.ar .google.as \
        .google.at .google.com.au .google.az .google.ba .google.com.bd .google.be .google.bf \
        .google.bg .google.com.bh .google.bi .google.bj .google.com.bn .google.com.bo \
        .google.com.br .google.bs .google.bt .google.co.bw .google.by .google.com.bz \
        .google.ca .google.cd .google.cf .google.cg .google.ch .google.ci .google.co.ck \
        .google.cl .google.cm .google.cn .google.com.co .google.co.cr .google.com.cu \
        .google.cv .google.com.cy .google.cz .google.de .google.dj .google.dk .google.dm \
        .google.com.do .google.dz .google.com.ec .google.ee .google.com.eg .google.es \
        .google.com.et .google.fi .google.com.fj .google.fm .google.fr .google.ga \
        .google.ge .google.gg .google.com.gh .google.com.gi .google.gl .google.gm \
        .google.gr .google.com.gt .google.gy .google.com.hk .google.hn .google.hr \
        .google.ht .google.hu .google.co.id .google.ie .google.co.il .google.im \
        .google.co.in .google.iq .google.is .google.it .google.je .google.com.jm \
        .google.jo .google.co.jp .google.co.ke .google.com.kh .google.ki .google.kg \
        .google.co.kr .google.com.kw .google.kz .google.la .google.com.lb .google.li \
        .google.lk .google.co.ls .google.lt .google.lu .google.lv .google.com.ly \
        .google.co.ma .google.md .google.me .google.mg .google.mk .google.ml \
        .google.com.mm .google.mn .google.com.mt .google.mu .google.mv .google.mw \
        .google.com.mx .google.com.my .google.co.mz .google.com.na .google.com.ng \
        .google.com.ni .google.ne .google.nl .google.no .google.com.np .google.nr \
        .google.nu .google.co.nz .google.com.om .google.com.pa .google.com.pe \
        .google.com.pg .google.com.ph .google.com.pk .google.pl .google.pn .google.com.pr \
        .google.ps .google.pt .google.com.py .google.com.qa .google.ro .google.ru \
        .google.rw .google.com.sa .google.com.sb .google.sc .google.se .google.com.sg \
        .google.sh .google.si .google.sk .google.com.sl .google.sn .google.so .google.sm \
        .google.sr .google.st .google.com.sv .google.td .google.tg .google.co.th \
        .google.com.tj .google.tl .google.tm .google.tn .google.to .google.com.tr \
        .google.tt .google.com.tw .google.co.tz .google.com.ua .google.co.ug .google.co.uk \
        .google.com.uy .google.co.uz .google.com.vc .google.co.ve .google.co.vi \
        .google.com.vn .google.vu .google.ws .google.rs .google.co.za .google.co.zm \
        .google.co.zw .google.cat";

    #[test]
    fn every_google_search_domain_is_enforced() {
        for domain in GOOGLE_SUPPORTED_DOMAINS.split_whitespace() {
            for prefix in ["www", "images"] {
                let host = format!("{prefix}{domain}");
                assert_eq!(
                    enforced_endpoint(&host, ALL),
                    Some("forcesafesearch.google.com"),
                    "{host}"
                );
            }
            let bare = &domain[1..];
            assert_eq!(
                enforced_endpoint(bare, ALL),
                Some("forcesafesearch.google.com"),
                "{bare}"
            );
        }
        for host in ["www.google.fr", "www.google.co.uk", "images.google.com"] {
            assert_eq!(
                enforced_endpoint(host, ALL),
                Some("forcesafesearch.google.com"),
                "{host}"
            );
        }
        for host in [
            "maps.google.com",
            "www.google.example",
            "images.google.evil.test",
        ] {
            assert_eq!(enforced_endpoint(host, ALL), None, "{host}");
        }
    }

    #[test]
    fn every_documented_host_of_bing_duckduckgo_and_youtube_is_enforced() {
        for (host, endpoint) in [
            ("bing.com", "strict.bing.com"),
            ("www.bing.com", "strict.bing.com"),
            ("cn.bing.com", "strict.bing.com"),
            ("duckduckgo.com", "safe.duckduckgo.com"),
            ("www.duckduckgo.com", "safe.duckduckgo.com"),
            ("lite.duckduckgo.com", "safe.duckduckgo.com"),
            ("html.duckduckgo.com", "safe.duckduckgo.com"),
            ("safe.duckduckgo.com", "safe.duckduckgo.com"),
            ("www.youtube.com", "restrict.youtube.com"),
            ("m.youtube.com", "restrict.youtube.com"),
            ("youtube.com", "restrict.youtube.com"),
            ("youtubei.googleapis.com", "restrict.youtube.com"),
            ("youtube.googleapis.com", "restrict.youtube.com"),
            ("www.youtube-nocookie.com", "restrict.youtube.com"),
            ("youtube-nocookie.com", "restrict.youtube.com"),
            ("music.youtube.com", "restrict.youtube.com"),
        ] {
            assert_eq!(enforced_endpoint(host, ALL), Some(endpoint), "{host}");
        }
        let moderate = Restrictions {
            safesearch: false,
            youtube: YouTubeMode::Moderate,
        };
        assert_eq!(
            enforced_endpoint("music.youtube.com", moderate),
            Some("restrictmoderate.youtube.com")
        );
        assert_eq!(enforced_endpoint("cn.bing.com", moderate), None);
        assert_eq!(enforced_endpoint("api.duckduckgo.com.evil.test", ALL), None);
    }

    #[test]
    fn plain_requests_to_the_new_hosts_are_marked() {
        let mut headers = HeaderMap::new();
        for host in ["lite.duckduckgo.com", "html.duckduckgo.com"] {
            let query = mark_plain_request(host, Some("q=x&kp=-2"), &mut headers, ALL);
            assert_eq!(query.as_deref(), Some("q=x&kp=1"), "{host}");
        }
        let query = mark_plain_request("cn.bing.com", Some("q=x&adlt=off"), &mut headers, ALL);
        assert_eq!(query.as_deref(), Some("q=x&adlt=strict"));
        let query = mark_plain_request("www.google.fr", Some("q=x&safe=off"), &mut headers, ALL);
        assert_eq!(query.as_deref(), Some("q=x&safe=active"));
        let query = mark_plain_request("images.google.com", Some("q=x"), &mut headers, ALL);
        assert_eq!(query.as_deref(), Some("q=x&safe=active"));
        let mut headers = HeaderMap::new();
        assert_eq!(
            mark_plain_request("music.youtube.com", None, &mut headers, ALL),
            None
        );
        assert_eq!(headers["youtube-restrict"], "Strict");
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
