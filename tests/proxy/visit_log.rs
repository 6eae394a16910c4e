//! The visit log through the running proxy: allowed, blocked, CONNECT and failed
//! requests leave records with the right fields, search terms are extracted, and the
//! records are in the database after a clean shutdown.

use std::net::Ipv4Addr;

use safegate_store::{Outcome, Query, SeenAs, Store};
use tokio::io::AsyncWriteExt;

use crate::kit::dns::FakeDns;
use crate::kit::origin::Origin;
use crate::kit::process::SafeGate;
use crate::kit::{bounded, raw};

#[tokio::test]
async fn requests_are_recorded_with_their_fields() {
    bounded(async {
        let origin = Origin::start().await;
        let port = origin.addr.port();
        let dns = FakeDns::start(&[
            ("www.bing.com", Ipv4Addr::LOCALHOST),
            ("strict.bing.com", Ipv4Addr::LOCALHOST),
            ("www.bet365.com", Ipv4Addr::LOCALHOST),
        ])
        .await;
        let sets = [
            format!("upstream.dns.servers=[\"{}\"]", dns.addr),
            "upstream.dns.ip_strategy=\"ipv4_only\"".to_owned(),
            format!("proxy.connect_ports=[443, {port}]"),
            "store.visit_log=true".to_owned(),
            "policy.client_roles=[{ network = \"127.0.0.0/8\", role = \"filter-admin\" }]"
                .to_owned(),
        ];
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let mut safegate = SafeGate::start(&refs).await;
        let client = safegate.client();
        // The test origin has no /search route: it answers 404 "no such route" (13 bytes).
        let search = format!("http://www.bing.com:{port}/search?q=how+to+revise%20for+SATs");
        let response = client
            .get(&search)
            .header("user-agent", "visit-log-test")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(response.bytes().await.unwrap().len(), 13);
        let blocked = client
            .get(format!("http://www.bet365.com:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(blocked.status(), 403);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let failed = client
            .get(format!("http://{closed}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(failed.status(), 502);
        let mut tunnel = raw::connect(safegate.proxy).await;
        tunnel
            .write_all(
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        assert!(
            raw::read_head(&mut tunnel)
                .await
                .starts_with("HTTP/1.1 200")
        );
        tunnel
            .write_all(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let rest = raw::read_until_close(&mut tunnel, std::time::Duration::from_secs(10)).await;
        assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));
        drop(tunnel);
        drop(client);

        safegate.terminate();
        assert!(safegate.wait().await.success());
        let store = Store::open(safegate.data_dir()).unwrap();
        let records = store.query(&Query::default()).unwrap();
        assert_eq!(records.len(), 4, "{records:#?}");
        let search_record = records.iter().find(|r| r.host == "www.bing.com").unwrap();
        assert_eq!(search_record.outcome, Outcome::Allowed);
        assert_eq!((search_record.status, search_record.bytes_down), (404, 13));
        assert_eq!(search_record.seen_as, SeenAs::PlainHttp);
        assert_eq!(search_record.role, "filter-admin");
        assert_eq!(search_record.user_agent.as_deref(), Some("visit-log-test"));
        let terms = search_record.search.as_ref().unwrap();
        assert_eq!(
            (terms.engine.as_str(), terms.terms.as_str()),
            ("bing", "how to revise for SATs")
        );
        let blocked_record = records.iter().find(|r| r.host == "www.bet365.com").unwrap();
        assert_eq!(blocked_record.outcome, Outcome::Blocked);
        assert_eq!(blocked_record.rule, "category:filter-admin:gambling");
        let failed_record = records
            .iter()
            .find(|r| r.outcome == Outcome::Failed)
            .unwrap();
        assert_eq!(failed_record.failure.as_deref(), Some("connection-refused"));
        let tunnel_record = records.iter().find(|r| r.method == "CONNECT").unwrap();
        assert_eq!(tunnel_record.seen_as, SeenAs::ConnectHost);
        assert!(
            tunnel_record.bytes_down > 10 && tunnel_record.bytes_up > 10,
            "{tunnel_record:?}"
        );
        let blocked_only = store
            .query(&Query {
                blocked_only: true,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(blocked_only.len(), 1);
    })
    .await;
}
