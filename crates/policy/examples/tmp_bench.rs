//! temporary
#![allow(clippy::unwrap_used)]
use safegate_policy::*;
fn main() {
    let s = Policy::load(std::path::Path::new("config/policy.toml")).unwrap();
    println!("{:?}", s.stats().compile_time);
    let urls = ["http://www.bet365.com/x", "http://example.org/page/a.html", "http://www.facebook.com/", "http://dl.test/a/b/c.zip"];
    let targets: Vec<_> = urls.iter().map(|u| RequestTarget::parse_url(u).unwrap()).collect();
    let now: jiff::Timestamp = "2026-03-30T07:45:00Z".parse().unwrap();
    for role in Role::ALL {
        let subj = Subject { role, group: None, user: Some("x") };
        for t in &targets {
            let n = 1_000_000;
            let start = std::time::Instant::now();
            let mut blocked = 0;
            for _ in 0..n { if std::hint::black_box(s.decide(&subj, t, now)).is_blocked() { blocked += 1; } }
            println!("{role} {} {:?}/decide blocked={}", t.url_text(), start.elapsed() / n, blocked > 0);
        }
    }
}
