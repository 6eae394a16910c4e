//! Sites reached by IP address and DNS-over-HTTPS resolvers (issue 17, point 10):
//! with `block_ip_hosts` on for pupils, a CONNECT or a URL whose host is an IP
//! address (in any spelling) is blocked with the rule `ip-address-host:pupil` unless
//! an allow-list names the address; the shipped policy blocks the public DoH
//! resolvers by name and by address, and `safegate check` says the same as the proxy.
//! Only loopback is ever connected to: the DoH addresses are decided on, with
//! `upstream.deny_networks` refusing every non-loopback network as a second guard.

use tokio::io::AsyncWriteExt;

use crate::kit::origin::Origin;
use crate::kit::process::{SafeGate, run_to_end, shipped_config};
use crate::kit::{bounded, raw};
use crate::ops::hangup;

/// Every network but 127.0.0.0/8, for `upstream.deny_networks`.
const NOT_LOOPBACK: &str = "upstream.deny_networks=[\"0.0.0.0/2\", \"64.0.0.0/3\", \
     \"96.0.0.0/4\", \"112.0.0.0/5\", \"120.0.0.0/6\", \"124.0.0.0/7\", \"126.0.0.0/8\", \
     \"128.0.0.0/1\", \"::/0\"]";

fn policy(global_allow: &str) -> String {
    let circumvention =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blocklists/circumvention.txt");
    format!(
        r#"timezone = "Europe/London"
default_role = "pupil"

[global]
allow = [{global_allow}]

[categories.circumvention]
sources = [{{ format = "domains", path = {:?} }}]

[roles.pupil]
block = ["circumvention"]
block_ip_hosts = true

[roles.staff]
block_ip_hosts = false

[roles.filter-admin]
"#,
        circumvention.display().to_string()
    )
}

fn rule_of(response: &str) -> String {
    response
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-safegate-rule")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

async fn connect(safegate: &SafeGate, authority: &str) -> String {
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    raw::exchange(safegate.proxy, request.as_bytes()).await
}

async fn get(safegate: &SafeGate, url: &str) -> (u16, String, String) {
    let response = safegate.client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let rule = response
        .headers()
        .get("x-safegate-rule")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, rule, response.text().await.unwrap())
}

async fn check_rule(args: &[&str]) -> String {
    let config = shipped_config().display().to_string();
    let mut all = vec!["check", "--config", &config, "--json"];
    all.extend_from_slice(args);
    let (_, stdout, stderr) = run_to_end(&all).await;
    let json: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    json["rule"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn pupils_cannot_reach_sites_by_address_unless_allow_listed() {
    bounded(async {
        let origin = Origin::start().await;
        let port = origin.addr.port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, policy("")).unwrap();
        let file = format!("policy.file={:?}", path.display().to_string());
        let ports = format!("proxy.connect_ports=[443, {port}]");
        let mut safegate =
            SafeGate::start(&[&file, &ports, "policy.watch=false", NOT_LOOPBACK]).await;

        // By address, in three spellings, as a tunnel and as a URL: blocked.
        for authority in [
            format!("127.0.0.1:{port}"),
            format!("2130706433:{port}"),
            format!("0x7f.0.0.1:{port}"),
        ] {
            let response = connect(&safegate, &authority).await;
            assert_eq!(raw::status_of(&response), 403, "{authority}: {response}");
            assert_eq!(rule_of(&response), "ip-address-host:pupil", "{response}");
        }
        let (status, rule, page) =
            get(&safegate, &format!("http://127.0.0.1:{port}/bytes/3")).await;
        assert_eq!(
            (status, rule.as_str()),
            (403, "ip-address-host:pupil"),
            "{page}"
        );
        assert!(
            page.contains("reached by their number (an IP address) instead of their name"),
            "{page}"
        );
        // DoH resolvers: blocked as circumvention, and never connected to.
        for authority in [
            "1.1.1.1:443",
            "8.8.8.8:443",
            "9.9.9.9:443",
            "[2606:4700:4700::1111]:443",
        ] {
            let response = connect(&safegate, authority).await;
            assert_eq!(raw::status_of(&response), 403, "{authority}: {response}");
            assert_eq!(
                rule_of(&response),
                "category:pupil:circumvention",
                "{response}"
            );
        }
        let (status, rule, _) = get(&safegate, "http://203.0.113.9/").await;
        assert_eq!((status, rule.as_str()), (403, "ip-address-host:pupil"));
        assert_eq!(origin.connections(), 0);

        // Allow-listed, the address is reached (allow-lists come before the rule).
        std::fs::write(&path, policy("\"127.0.0.1\"")).unwrap();
        hangup(&safegate);
        safegate.wait_for_log("policy reloaded").await;
        let response = safegate
            .client()
            .get(format!("http://127.0.0.1:{port}/bytes/3"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().len(), 3);
        let mut stream = raw::connect(safegate.proxy).await;
        let authority = format!("127.0.0.1:{port}");
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = raw::read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let response = connect(&safegate, "8.8.8.8:443").await;
        assert_eq!(
            rule_of(&response),
            "category:pupil:circumvention",
            "{response}"
        );
    })
    .await;
}

#[tokio::test]
async fn check_agrees_on_the_shipped_policy() {
    bounded(async {
        for (url, rule) in [
            ("https://1.1.1.1/dns-query", "category:pupil:circumvention"),
            ("https://8.8.8.8/", "category:pupil:circumvention"),
            ("https://9.9.9.9/", "category:pupil:circumvention"),
            (
                "https://mozilla.cloudflare-dns.com/dns-query",
                "category:pupil:circumvention",
            ),
            ("http://203.0.113.9/", "ip-address-host:pupil"),
            ("http://3405803785/", "ip-address-host:pupil"),
        ] {
            assert_eq!(check_rule(&[url]).await, rule, "{url}");
        }
        assert_eq!(
            check_rule(&["--role", "staff", "http://203.0.113.9/"]).await,
            "default"
        );
    })
    .await;
}
