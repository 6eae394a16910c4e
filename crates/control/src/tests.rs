//! The control channel end to end: protocol, server, client and the local path.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use safegate_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::client::run_remote;
use crate::log::{Format, LogPurge, LogQuery};
use crate::server::peer_of;
use crate::users::{UsersAdd, UsersImport, UsersPasswd};
use crate::*;

#[test]
fn only_the_same_user_or_root_may_talk() {
    assert!(peer_allowed(998, 998));
    assert!(peer_allowed(0, 998));
    assert!(peer_allowed(0, 0));
    assert!(!peer_allowed(1000, 998));
    assert!(!peer_allowed(998, 0));
}

#[test]
fn peer_credentials_are_read_from_the_socket() {
    let (a, _b) = StdUnixStream::pair().unwrap();
    let (uid, pid) = peer_of(&a).unwrap();
    assert_eq!(uid, rustix::process::geteuid().as_raw());
    assert_eq!(pid, std::process::id() as i32);
}

#[test]
fn requests_are_tagged_json_lines() {
    let request = Request::LogPurge(LogPurge {
        before: 42,
        timezone: "UTC".into(),
    });
    let text = serde_json::to_string(&request).unwrap();
    assert_eq!(
        text,
        r#"{"command":"log_purge","before":42,"timezone":"UTC"}"#
    );
    assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
    let query: Request =
        serde_json::from_str(r#"{"command":"log_query","user":"ada","format":"json"}"#).unwrap();
    match query {
        Request::LogQuery(q) => {
            assert_eq!(q.user.as_deref(), Some("ada"));
            assert_eq!(q.format, Format::Json);
        }
        other => panic!("{other:?}"),
    }
    let unknown = serde_json::from_str::<Request>(r#"{"command":"users_frobnicate"}"#).unwrap_err();
    assert!(
        unknown.to_string().contains("users_frobnicate"),
        "{unknown}"
    );
    assert!(serde_json::from_str::<Request>(r#"{"command":"log_query","usr":"x"}"#).is_err());
}

#[test]
fn users_requests_never_show_hashes_in_logs() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";
    let requests = [
        Request::UsersAdd(UsersAdd {
            shared: false,
            name: "ada".into(),
            display_name: Some("Ada".into()),
            role: "staff".into(),
            group: Some("office".into()),
            permissions: [safegate_store::Permission::Reports].into(),
            password_hash: hash.into(),
        }),
        Request::UsersPasswd(UsersPasswd {
            name: "ada".into(),
            password_hash: hash.into(),
        }),
        Request::UsersImport(UsersImport {
            source: "pupils.csv".into(),
            rows: vec![safegate_store::ImportRow {
                shared: false,
                line: 2,
                name: "year6".into(),
                display_name: None,
                role: "pupil".into(),
                group: Some("year6".into()),
                permissions: Default::default(),
                password_hash: Some(hash.into()),
            }],
            bad_rows: Vec::new(),
            dry_run: false,
        }),
    ];
    for request in &requests {
        let described = request.describe();
        let debug = format!("{request:?}");
        for text in [&described, &debug] {
            assert!(!text.contains("argon2"), "{text}");
        }
        // What crosses the socket does carry the hash, and reads back the same.
        let line = serde_json::to_string(request).unwrap();
        assert!(line.contains(hash), "{line}");
        assert_eq!(&serde_json::from_str::<Request>(&line).unwrap(), request);
    }
    assert_eq!(
        requests[0].describe(),
        r#"users add name="ada" role="staff" group="office" permissions=reports"#
    );
    assert_eq!(
        requests[2].describe(),
        r#"users import file="pupils.csv" rows=1"#
    );
    // A plain password field is refused, not ignored.
    let plain = serde_json::from_str::<Request>(
        r#"{"command":"users_passwd","name":"ada","password":"hunter22"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(plain.contains("password"), "{plain}");
}

#[test]
fn a_second_open_is_recognised_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let error = Store::open(dir.path()).err().unwrap();
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
}

#[test]
fn no_database_is_created_where_there_was_none() {
    let dir = tempfile::tempdir().unwrap();
    let error = open_store_or_connect(dir.path()).err().unwrap();
    assert!(
        format!("{error}").contains("no SafeGate database"),
        "{error}"
    );
    assert!(!dir.path().join("db").exists());
}

#[test]
fn locked_without_a_socket_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let error = format!("{:#}", open_store_or_connect(dir.path()).err().unwrap());
    assert!(error.contains("could not acquire lock"), "{error}");
    assert!(error.contains("control.sock"), "{error}");
    assert!(error.contains("stop it"), "{error}");
}

/// The server and the local path give the same bytes; refusals and bad commands
/// get a status line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_serves_what_execute_writes() {
    use crate::log::tests::record;
    use safegate_store::Outcome;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .write_records(&[
            record(1_000_000, Some("ada"), "a.example", Outcome::Allowed),
            record(2_000_000, Some("bob"), "b.example", Outcome::Blocked),
        ])
        .unwrap();
    let server = ControlServer::bind(dir.path(), store.clone())
        .unwrap()
        .with_request_timeout(Duration::from_secs(3));
    let mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let slots = server.slots();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    let request = Request::LogQuery(LogQuery {
        blocked_only: true,
        format: Format::Csv,
        timezone: "UTC".into(),
        ..LogQuery::default()
    });
    let mut local = Vec::new();
    execute(&store, &request, &mut local).unwrap();
    let socket = socket_path(dir.path());
    let remote = tokio::task::spawn_blocking({
        let request = request.clone();
        let socket = socket.clone();
        move || {
            let stream = StdUnixStream::connect(&socket).unwrap();
            let mut out = Vec::new();
            run_remote(stream, &socket, &request, &mut out).unwrap();
            out
        }
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(remote).unwrap(),
        String::from_utf8(local).unwrap()
    );

    let answer = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            let mut stream = StdUnixStream::connect(&socket).unwrap();
            stream.write_all(b"{\"command\":\"nonsense\"}\n").unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        }
    })
    .await
    .unwrap();
    let status: Status = serde_json::from_str(answer.trim_end()).unwrap();
    assert!(!status.ok);
    assert!(status.error.unwrap().contains("nonsense"));

    // A client that sends nothing is dropped after the timeout, and holds no
    // command slot: more silent clients than slots, then a real command. The
    // commands above release their slots just after answering: wait for that.
    let free = tokio::time::timeout(
        Duration::from_secs(10),
        slots.acquire_many(MAX_CONCURRENT as u32),
    )
    .await
    .unwrap()
    .unwrap();
    drop(free);
    let silent = tokio::task::spawn_blocking({
        let socket = socket.clone();
        let request = request.clone();
        move || {
            let clients: Vec<StdUnixStream> = (0..MAX_CONCURRENT + 1)
                .map(|_| StdUnixStream::connect(&socket).unwrap())
                .collect();
            // While every slot is taken, a real client is told why it is refused.
            let busy = StdUnixStream::connect(&socket).unwrap();
            let refused = run_remote(busy, &socket, &request, &mut Vec::new()).unwrap_err();
            assert!(format!("{refused:#}").contains("busy"), "{refused:#}");
            let started = std::time::Instant::now();
            let mut answers = Vec::new();
            for mut client in clients {
                client
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut answer = String::new();
                client.read_to_string(&mut answer).unwrap();
                answers.push(answer);
            }
            (started.elapsed(), answers)
        }
    })
    .await
    .unwrap();
    let (waited, answers) = silent;
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    // The slots' clients were dropped in silence; the one beyond was told "busy".
    assert_eq!(
        answers.iter().filter(|a| a.is_empty()).count(),
        MAX_CONCURRENT
    );
    assert!(answers.iter().any(|a| a.contains("busy")), "{answers:?}");
    let again = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            let stream = StdUnixStream::connect(&socket).unwrap();
            let mut out = Vec::new();
            run_remote(stream, &socket, &request, &mut out).unwrap();
            out
        }
    })
    .await
    .unwrap();
    assert!(String::from_utf8(again).unwrap().contains("b.example"));

    shutdown.cancel();
    task.await.unwrap();
    assert!(!socket.exists(), "socket left behind");
}
