//! Transparent mode: redirected plain HTTP decided by its Host header, redirected TLS
//! decided by its server name and relayed untouched, refusals without a name.
//!
//! The first tests connect to the transparent listeners directly (no redirect, so no
//! original destination) and run anywhere. The last one builds what a school network
//! does: a client in its own network namespace behind a veth pair, iptables
//! `REDIRECT` of its ports 80 and 443 to SafeGate, and curl as the client. It needs
//! root, `ip netns` and iptables; without them it says so on stderr and skips. All
//! traffic stays on loopback and in the namespace and veth pair the test creates and
//! removes (also on panic).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use safegate_store::{Outcome, Query, Record, SeenAs, Store};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::kit::dns::FakeDns;
use crate::kit::origin::{Origin, TestCa};
use crate::kit::process::SafeGate;
use crate::kit::{bounded, payload, raw};

/// The TLS alert SafeGate answers a blocked server name with: fatal, access_denied.
const ACCESS_DENIED_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

/// The ClientHello rustls sends for `name` (no SNI when `name` is an IP address).
pub(crate) fn client_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name)
        .unwrap()
        .to_owned();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut wire = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Every record in the visit log of a SafeGate that has stopped.
fn records_of(safegate: &SafeGate) -> Vec<Record> {
    let store = Store::open(safegate.data_dir()).unwrap();
    store.query(&Query::default()).unwrap()
}

fn dns_sets(dns: &FakeDns) -> [String; 2] {
    [
        format!("upstream.dns.servers=[\"{}\"]", dns.addr),
        "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
    ]
}

/// Origin-form requests on the transparent HTTP port go where their Host header
/// says, through the ordinary decision, block page and visit log.
#[tokio::test]
async fn transparent_http_is_decided_by_its_host_header() {
    bounded(async {
        let origin = Origin::start().await;
        let port = origin.addr.port();
        let dns = FakeDns::start(&[
            ("www.example.com", Ipv4Addr::LOCALHOST),
            ("www.bet365.com", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let [servers, strategy] = dns_sets(&dns);
        let mut safegate = SafeGate::start(&[
            &servers,
            &strategy,
            "transparent.http_listen=\"127.0.0.1:0\"",
        ])
        .await;
        let http = safegate
            .logged_addr("transparent HTTP listening on ")
            .unwrap();

        let allowed = raw::exchange(
            http,
            format!(
                "GET /uri?page=1 HTTP/1.1\r\nHost: www.example.com:{port}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(raw::status_of(&allowed), 200, "{allowed}");
        assert!(allowed.ends_with("/uri?page=1"), "{allowed}");

        let blocked = raw::exchange(
            http,
            format!("GET /casino HTTP/1.1\r\nHost: www.bet365.com:{port}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw::status_of(&blocked), 403, "{blocked}");
        assert!(blocked.contains("This page is blocked"), "{blocked}");
        // The review form posts to the address the client reached.
        assert!(blocked.contains(&format!("action=\"http://{http}/")), "{blocked}");

        // No Host header and no redirect: nothing says where to go.
        let nowhere = raw::exchange(http, b"GET / HTTP/1.0\r\n\r\n").await;
        assert_eq!(raw::status_of(&nowhere), 400, "{nowhere}");
        assert!(nowhere.contains("x-safegate-reason: bad-request"), "{nowhere}");
        assert_eq!(origin.connections(), 1, "only the allowed request reached the origin");

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let records = records_of(&safegate);
        assert_eq!(records.len(), 2, "{records:#?}");
        let allowed = records.iter().find(|r| r.host == "www.example.com").unwrap();
        assert_eq!(
            (allowed.outcome, allowed.seen_as, allowed.status),
            (Outcome::Allowed, SeenAs::PlainHttp, 200)
        );
        assert_eq!(allowed.path.as_deref(), Some("/uri?page=1"));
        let blocked = records.iter().find(|r| r.host == "www.bet365.com").unwrap();
        assert_eq!(blocked.outcome, Outcome::Blocked);
        assert_eq!(blocked.rule, "category:pupil:gambling");
    })
    .await;
}

/// On the transparent HTTPS port: a blocked server name gets a TLS alert and is
/// recorded; no name and no original destination, bytes that are not TLS, and a
/// client that sends nothing are closed with a log line.
#[tokio::test]
async fn transparent_tls_refusals() {
    bounded(async {
        let mut safegate = SafeGate::start(&[
            "transparent.https_listen=\"127.0.0.1:0\"",
            "proxy.header_read_timeout=\"1s\"",
        ])
        .await;
        let https = safegate
            .logged_addr("transparent HTTPS listening on ")
            .unwrap();
        let limit = Duration::from_secs(10);

        let mut blocked = raw::connect(https).await;
        blocked
            .write_all(&client_hello("www.bet365.com"))
            .await
            .unwrap();
        let answer = raw::read_until_close(&mut blocked, limit).await;
        assert_eq!(answer, ACCESS_DENIED_ALERT);

        let mut nameless = raw::connect(https).await;
        nameless
            .write_all(&client_hello("192.0.2.1"))
            .await
            .unwrap();
        assert!(raw::read_until_close(&mut nameless, limit).await.is_empty());
        safegate
            .wait_for_log("without SNI and without an original destination")
            .await;

        let mut plain = raw::connect(https).await;
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
            .await
            .unwrap();
        assert!(raw::read_until_close(&mut plain, limit).await.is_empty());
        safegate.wait_for_log("not TLS").await;

        let started = std::time::Instant::now();
        let mut silent = raw::connect(https).await;
        assert!(raw::read_until_close(&mut silent, limit).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
        safegate
            .wait_for_log("TLS ClientHello not received within proxy.header_read_timeout")
            .await;

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let records = records_of(&safegate);
        assert_eq!(records.len(), 1, "{records:#?}");
        let record = &records[0];
        assert_eq!(
            (record.host.as_str(), record.method.as_str(), record.port),
            ("www.bet365.com", "TLS", 443)
        );
        assert_eq!(
            (record.outcome, record.seen_as, record.status),
            (Outcome::Blocked, SeenAs::ConnectHost, 403)
        );
    })
    .await;
}

/// A client network namespace joined to this one by a veth pair, with iptables rules
/// in this namespace; everything is removed when dropped (also on panic).
struct ClientNet {
    namespace: String,
    host_side: String,
    /// Subnet number x: 10.213.x.0/30 (this side .1, the client .2) and, when IPv6
    /// is on, fd21:213:x::/64 (::1 and ::2).
    subnet: u8,
    /// Rules added to the nat tables: the program (iptables, ip6tables) and the chain
    /// and match (for `-D`).
    rules: Vec<(&'static str, Vec<String>)>,
}

impl ClientNet {
    /// This side's address.
    fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// The client's address.
    fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 2)
    }

    /// This side's IPv6 address.
    fn host_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd21, 0x213, u16::from(self.subnet), 0, 0, 0, 0, 1)
    }

    /// The client's IPv6 address.
    fn client_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd21, 0x213, u16::from(self.subnet), 0, 0, 0, 0, 2)
    }

    /// Creates the namespace and the veth pair; `Err` says why it cannot be done here.
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let namespace = format!("sg-transparent-{pid}");
        let host_side = format!("sgh{}", pid % 100_000);
        // Leftovers of an earlier run that had this process id and was killed.
        let _ = run("ip", &["link", "del", &host_side]);
        let _ = run("ip", &["netns", "del", &namespace]);
        run("ip", &["netns", "add", &namespace])
            .map_err(|e| format!("`ip netns add` failed: {e}"))?;
        let mut net = Self {
            namespace,
            host_side,
            subnet: 0,
            rules: Vec::new(),
        };
        run("iptables", &["-w", "5", "-t", "nat", "-S", "PREROUTING"])
            .map_err(|e| format!("iptables (nat table) is not usable: {e}"))?;
        net.subnet = free_subnet()?;
        let client_side = format!("sgc{}", pid % 100_000);
        let ns = net.namespace.clone();
        let host_cidr = format!("{}/30", net.host_ip());
        let client_cidr = format!("{}/30", net.client_ip());
        let steps: [&[&str]; 6] = [
            &[
                "link",
                "add",
                &net.host_side,
                "type",
                "veth",
                "peer",
                "name",
                &client_side,
                "netns",
                &ns,
            ],
            &["addr", "add", &host_cidr, "dev", &net.host_side],
            &["link", "set", &net.host_side, "up"],
            &["-n", &ns, "addr", "add", &client_cidr, "dev", &client_side],
            &["-n", &ns, "link", "set", &client_side, "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            run("ip", step).map_err(|e| format!("setting up the veth pair failed: {e}"))?;
        }
        Ok(net)
    }

    /// Gives both ends IPv6 addresses (no duplicate detection, usable at once).
    fn add_ipv6(&self) -> Result<(), String> {
        let client_side = self.host_side.replacen("sgh", "sgc", 1);
        let host_cidr = format!("{}/64", self.host_ip6());
        let client_cidr = format!("{}/64", self.client_ip6());
        run(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &host_cidr,
                "dev",
                &self.host_side,
                "nodad",
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &self.namespace,
                "-6",
                "addr",
                "add",
                &client_cidr,
                "dev",
                &client_side,
                "nodad",
            ],
        )?;
        Ok(())
    }

    /// Redirects the client's TCP traffic to `port` to SafeGate's `to_port`, with
    /// `program` (iptables or ip6tables).
    fn redirect(&mut self, program: &'static str, port: u16, to_port: u16) -> Result<(), String> {
        let rule: Vec<String> = [
            "PREROUTING",
            "-i",
            &self.host_side,
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_port.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut args = vec!["-w", "5", "-t", "nat", "-A"];
        args.extend(rule.iter().map(String::as_str));
        run(program, &args).map_err(|e| format!("{program} cannot add a REDIRECT rule: {e}"))?;
        self.rules.push((program, rule));
        Ok(())
    }

    /// curl inside the client namespace (no proxy, bounded in time).
    async fn curl(&self, args: &[&str]) -> Output {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace, "curl", "-sS"])
            .args([
                "--noproxy",
                "*",
                "--connect-timeout",
                "5",
                "--max-time",
                "15",
            ])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("curl did not finish in 20s")
            .unwrap()
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        for (program, rule) in &self.rules {
            let mut args = vec!["-w", "5", "-t", "nat", "-D"];
            args.extend(rule.iter().map(String::as_str));
            let _ = run(program, &args);
        }
        // Deleting one end of a veth pair deletes both; the namespace goes last.
        let _ = run("ip", &["link", "del", &self.host_side]);
        let _ = run("ip", &["netns", "del", &self.namespace]);
    }
}

/// Runs a setup command to completion; `Err` has its output when it fails.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = StdCommand::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// A subnet number x that no interface here uses (neither 10.213.x.0/30 nor
/// fd21:213:x::/64), picked from the time and the process id.
fn free_subnet() -> Result<u8, String> {
    let in_use = run("ip", &["-o", "addr", "show"])?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    (0..=255u32)
        .map(|i| (seed.wrapping_add(i) % 256) as u8)
        .find(|x| {
            !in_use.contains(&format!(" 10.213.{x}."))
                && !in_use.contains(&format!(" fd21:213:{x:x}:"))
        })
        .ok_or_else(|| "no free subnet in 10.213.0.0/16".to_owned())
}

/// Says on the terminal (not the captured test output) what part of the namespace
/// test did not run, and why.
fn skip(what: &str, reason: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED transparent::redirected_traffic_from_a_client_namespace ({what}): {reason} \
         (needs root, `ip netns`, and iptables/ip6tables with the nat table)"
    );
}

/// A pupil's machine in its own namespace, its ports 80 and 443 redirected to
/// SafeGate by iptables, fetches with curl: allowed HTTP and HTTPS arrive intact
/// (curl verifies the origin's certificate, so the TLS bytes were relayed untouched),
/// blocked HTTP gets the block page, blocked HTTPS is closed, HTTPS to an address
/// without a name is decided on the original destination, and all of it is in the
/// visit log with the client's address. SafeGate listens dual-stack when the machine
/// has IPv6, so IPv4 clients arrive as IPv4-mapped addresses; with ip6tables the
/// same is checked over IPv6.
#[tokio::test]
async fn redirected_traffic_from_a_client_namespace() {
    bounded(async {
        let mut net = match ClientNet::create() {
            Ok(net) => net,
            Err(reason) => return skip("whole test", &reason),
        };
        // The sites live on a loopback address of their own, on the real ports: SafeGate
        // connects to the name's address on the port the client was going to.
        let pid = std::process::id();
        let site_ip = Ipv4Addr::new(127, 213, (pid >> 8) as u8, (pid % 250) as u8 + 2);
        let ca = TestCa::for_names(&["www.example.com", "www.bet365.com"]);
        let plain = Origin::start_at(&format!("{site_ip}:80")).await;
        let tls = Origin::start_tls_at(&ca, &format!("{site_ip}:443")).await;
        let (plain, tls) = match (plain, tls) {
            (Ok(plain), Ok(tls)) => (plain, tls),
            (plain, tls) => {
                let reason = format!(
                    "cannot bind the test sites on {site_ip}:80 and :443: {:?} {:?}",
                    plain.err(),
                    tls.err()
                );
                return skip("whole test", &reason);
            }
        };
        let dns =
            FakeDns::start(&[("www.example.com", site_ip), ("www.bet365.com", site_ip)]).await;
        let [servers, strategy] = dns_sets(&dns);
        let dual_stack = Path::new("/proc/net/if_inet6").exists();
        let listen_ip = if dual_stack {
            "[::]".to_owned()
        } else {
            net.host_ip().to_string()
        };
        let http_listen = format!("transparent.http_listen=\"{listen_ip}:0\"");
        let https_listen = format!("transparent.https_listen=\"{listen_ip}:0\"");
        let mut safegate =
            SafeGate::start(&[&servers, &strategy, &http_listen, &https_listen]).await;
        let http_port = safegate
            .logged_addr("transparent HTTP listening on ")
            .unwrap()
            .port();
        let https_port = safegate
            .logged_addr("transparent HTTPS listening on ")
            .unwrap()
            .port();
        for (port, to) in [(80, http_port), (443, https_port)] {
            if let Err(reason) = net.redirect("iptables", port, to) {
                return skip("whole test", &reason);
            }
        }
        let gateway = net.host_ip().to_string();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        let ca_file = ca_file.display().to_string();

        let scene = Redirected {
            net: &net,
            gateway: &gateway,
            ca_file: &ca_file,
            http_port,
            plain: &plain,
            tls: &tls,
        };
        plain_http_is_fetched_or_gets_the_block_page(&scene).await;
        https_is_relayed_untouched_or_refused_by_its_name(&scene).await;
        let ipv6_checked =
            dual_stack && the_same_works_over_ipv6(&mut net, http_port, https_port).await;

        safegate.terminate();
        assert!(safegate.wait().await.success());
        the_visit_log_holds_each_request_with_its_client(&safegate, &net, &gateway, ipv6_checked);
        drop((plain, tls, dns));
        drop(net);
    })
    .await;
}

/// What the phases of the namespace test share: the client's network, the address of
/// this side of the veth, the test CA's file, the transparent HTTP port and the sites.
struct Redirected<'a> {
    net: &'a ClientNet,
    gateway: &'a str,
    ca_file: &'a str,
    http_port: u16,
    plain: &'a Origin,
    tls: &'a Origin,
}

/// curl's `--resolve` value: `host:port` reached at `via`.
fn resolve(host: &str, port: u16, via: &str) -> String {
    format!("{host}:{port}:{via}")
}

/// Allowed plain HTTP gets the origin's bytes; blocked plain HTTP gets the block page,
/// with a review form the client can reach, and the site is not contacted.
async fn plain_http_is_fetched_or_gets_the_block_page(scene: &Redirected<'_>) {
    let Redirected {
        net,
        gateway,
        http_port,
        plain,
        ..
    } = *scene;
    // Allowed plain HTTP: the origin's bytes.
    let fetched = net
        .curl(&[
            "--resolve",
            &resolve("www.example.com", 80, gateway),
            "http://www.example.com/bytes/5000",
        ])
        .await;
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(fetched.stdout == payload(5000), "plain HTTP body differs");

    // Blocked plain HTTP: the block page, with a review form the client can reach;
    // the site is not contacted.
    let plain_connections = plain.connections();
    let blocked = net
        .curl(&[
            "-i",
            "--resolve",
            &resolve("www.bet365.com", 80, gateway),
            "http://www.bet365.com/",
        ])
        .await;
    let page = String::from_utf8_lossy(&blocked.stdout);
    assert!(page.starts_with("HTTP/1.1 403"), "{page}");
    assert!(page.contains("This page is blocked"), "{page}");
    assert!(
        page.contains(&format!("action=\"http://{gateway}:{http_port}/")),
        "{page}"
    );
    assert_eq!(plain.connections(), plain_connections);
}

/// Allowed HTTPS by SNI is relayed untouched (curl verifies the site's own
/// certificate); blocked HTTPS by SNI is closed without contacting the site; HTTPS to
/// an address is decided on the original destination, where nothing listens.
async fn https_is_relayed_untouched_or_refused_by_its_name(scene: &Redirected<'_>) {
    let Redirected {
        net,
        gateway,
        ca_file,
        tls,
        ..
    } = *scene;
    // Allowed HTTPS by SNI: relayed untouched, so curl verifies the site's own
    // certificate and gets the site's bytes.
    let fetched = net
        .curl(&[
            "--cacert",
            ca_file,
            "--resolve",
            &resolve("www.example.com", 443, gateway),
            "https://www.example.com/bytes/300000",
        ])
        .await;
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(fetched.stdout == payload(300_000), "HTTPS body differs");

    // Blocked HTTPS by SNI: closed with an alert, the site never contacted.
    let tls_connections = tls.connections();
    let refused = net
        .curl(&[
            "--cacert",
            ca_file,
            "--resolve",
            &resolve("www.bet365.com", 443, gateway),
            "https://www.bet365.com/",
        ])
        .await;
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    assert_eq!(tls.connections(), tls_connections);

    // HTTPS to an address (no SNI): decided on the original destination, which is
    // this side of the veth, where nothing listens on 443.
    let nameless = net.curl(&["-k", &format!("https://{gateway}/")]).await;
    assert!(!nameless.status.success());
}

/// The same over IPv6, where the machine (dual stack) and ip6tables allow it: allowed
/// plain HTTP arrives intact and HTTPS to an address fails. Returns whether it ran.
async fn the_same_works_over_ipv6(net: &mut ClientNet, http_port: u16, https_port: u16) -> bool {
    let redirected = net.add_ipv6().and_then(|()| {
        net.redirect("ip6tables", 80, http_port)?;
        net.redirect("ip6tables", 443, https_port)
    });
    match redirected {
        Err(reason) => {
            skip("IPv6 part", &reason);
            false
        }
        Ok(()) => {
            let gateway6 = format!("[{}]", net.host_ip6());
            let fetched = net
                .curl(&[
                    "--resolve",
                    &resolve("www.example.com", 80, &gateway6),
                    "http://www.example.com/bytes/7000",
                ])
                .await;
            assert!(
                fetched.status.success(),
                "{}",
                String::from_utf8_lossy(&fetched.stderr)
            );
            assert!(fetched.stdout == payload(7000), "IPv6 HTTP body differs");
            let nameless = net.curl(&["-k", &format!("https://{gateway6}/")]).await;
            assert!(!nameless.status.success());
            true
        }
    }
}

/// After SafeGate stopped, the visit log holds every request with the client's own
/// address (IPv4, and IPv6 when that part ran): outcome, how it was seen, port, rule
/// or failure.
fn the_visit_log_holds_each_request_with_its_client(
    safegate: &SafeGate,
    net: &ClientNet,
    gateway: &str,
    ipv6_checked: bool,
) {
    let records = records_of(safegate);
    let find = |host: &str, method: &str, client: IpAddr| {
        records
            .iter()
            .find(|r| r.host == host && r.method == method && r.client == client)
            .unwrap_or_else(|| panic!("no {method} record for {host} from {client}: {records:#?}"))
    };
    let client = IpAddr::V4(net.client_ip());
    let http_allowed = find("www.example.com", "GET", client);
    assert_eq!(
        (
            http_allowed.outcome,
            http_allowed.seen_as,
            http_allowed.port
        ),
        (Outcome::Allowed, SeenAs::PlainHttp, 80)
    );
    assert_eq!(
        find("www.bet365.com", "GET", client).outcome,
        Outcome::Blocked
    );
    let tls_allowed = find("www.example.com", "TLS", client);
    assert_eq!(
        (tls_allowed.outcome, tls_allowed.seen_as, tls_allowed.port),
        (Outcome::Allowed, SeenAs::ConnectHost, 443)
    );
    assert!(tls_allowed.bytes_down > 300_000, "{tls_allowed:?}");
    let tls_blocked = find("www.bet365.com", "TLS", client);
    assert_eq!(
        (tls_blocked.outcome, tls_blocked.rule.as_str()),
        (Outcome::Blocked, "category:pupil:gambling")
    );
    let by_address = find(gateway, "TLS", client);
    assert_eq!(by_address.outcome, Outcome::Failed, "{by_address:?}");
    assert_eq!(by_address.failure.as_deref(), Some("connection-refused"));
    if ipv6_checked {
        let client6 = IpAddr::V6(net.client_ip6());
        assert_eq!(
            find("www.example.com", "GET", client6).outcome,
            Outcome::Allowed
        );
        let by_address = find(&net.host_ip6().to_string(), "TLS", client6);
        assert_eq!(by_address.failure.as_deref(), Some("connection-refused"));
    }
}
