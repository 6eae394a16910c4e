//! `safegate lists import --format ut1`: a UT1-shaped tar.gz served over HTTP from
//! 127.0.0.1 (or read from a file) is installed into a lists folder; malicious and
//! damaged archives are refused and the previous lists stay.

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::kit::bounded;
use crate::kit::files::FileServer;
use crate::kit::process::run_to_end;

/// One archive entry. Names and link targets are written into the tar header as
/// given, bypassing the `tar` crate's own path checks, so tests can build the
/// archives an attacker would.
enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn header(name: &str, kind: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut header = tar::Header::new_old();
    assert!(name.len() < 100 && link.len() < 100);
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

fn tarball(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for item in items {
        let (header, data): (_, &[u8]) = match item {
            Item::Dir(name) => (header(name, tar::EntryType::Directory, 0, ""), b""),
            Item::File(name, data) => (
                header(name, tar::EntryType::Regular, data.len() as u64, ""),
                data,
            ),
            Item::Symlink(name, target) => (header(name, tar::EntryType::Symlink, 0, target), b""),
            Item::HardLink(name, target) => (header(name, tar::EntryType::Link, 0, target), b""),
        };
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn gambling_domains() -> Vec<u8> {
    let mut text = b"# UT1 gambling\n\nbet.test\ncasino.test\n".to_vec();
    for i in 0..3000 {
        writeln!(text, "site{i}.gambling.test").unwrap();
    }
    text
}

/// A small UT1 collection: two categories, an alias, the catalogue and a README.
fn ut1_archive() -> Vec<u8> {
    let gambling = gambling_domains();
    tarball(&[
        Item::Dir("blacklists/"),
        Item::Dir("blacklists/adult/"),
        Item::File(
            "blacklists/adult/urls",
            b"adult.test/videos\nexample.test/adult\n",
        ),
        Item::File("blacklists/adult/expressions", b"(porn|xxx)\n"),
        Item::File("blacklists/adult/usage", b"black\n"),
        Item::Dir("blacklists/gambling/"),
        Item::File("blacklists/gambling/domains", &gambling),
        Item::File("blacklists/gambling/urls", b"example.test/poker\n"),
        Item::File("blacklists/gambling/usage", b"black\n"),
        Item::Symlink("blacklists/porn", "adult"),
        Item::File("blacklists/global_usage", b"NAME: adult\n"),
        Item::File("blacklists/adult/README", b"not a list\n"),
    ])
}

/// Every path under `root`, relative, sorted (links not followed).
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

async fn import(from: &str, into: &Path, extra: &[&str]) -> (bool, String, String) {
    let into = into.display().to_string();
    let mut args = vec![
        "lists", "import", "--format", "ut1", "--from", from, "--into", &into,
    ];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_to_end(&args).await;
    (status.success(), stdout, stderr)
}

#[tokio::test]
async fn imports_ut1_over_http_and_replaces_previous_lists() {
    bounded(async {
        let server = FileServer::start().await;
        server.put("/blacklists.tar.gz", ut1_archive());
        let url = server.url("/blacklists.tar.gz");
        let tmp = tempfile::tempdir().unwrap();
        let into = tmp.path().join("lists").join("ut1");

        let (ok, stdout, stderr) = import(&url, &into, &[]).await;
        assert!(ok, "import failed:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains(&url),
            "no progress naming the URL:\n{stderr}"
        );
        for needle in [
            "Imported 2 UT1 categories and 1 aliases",
            &url,
            "gambling",
            "3002 domains, 1 urls",
            "2 urls, 1 expressions",
            "porn",
            "-> adult",
            "Total: 3002 domains, 3 urls, 1 expressions.",
        ] {
            assert!(
                stdout.contains(needle),
                "summary lacks {needle:?}:\n{stdout}"
            );
        }
        assert_eq!(
            tree(&into),
            [
                "adult",
                "adult/expressions",
                "adult/urls",
                "adult/usage",
                "gambling",
                "gambling/domains",
                "gambling/urls",
                "gambling/usage",
                "global_usage",
                "porn",
            ]
        );
        assert_eq!(
            fs::read(into.join("gambling/domains")).unwrap(),
            gambling_domains()
        );
        // The alias reads as the category it points to.
        assert_eq!(
            fs::read_to_string(into.join("porn/urls")).unwrap(),
            "adult.test/videos\nexample.test/adult\n"
        );
        // Nothing but the lists folder is left beside it (no staging folders).
        assert_eq!(tree(&tmp.path().join("lists")).len(), 1 + tree(&into).len());

        // A new collection replaces the old one as a whole; --categories keeps only
        // what is asked for.
        let gambling_only = tarball(&[
            Item::File("blacklists/gambling/domains", b"newbet.test\n"),
            Item::File("blacklists/vpn/domains", b"vpn.test\n"),
        ]);
        server.put("/blacklists.tar.gz", gambling_only);
        let (ok, stdout, stderr) = import(&url, &into, &["--categories", "gambling"]).await;
        assert!(ok, "second import failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 domains"), "{stdout}");
        assert_eq!(tree(&into), ["gambling", "gambling/domains"]);
        assert_eq!(
            fs::read_to_string(into.join("gambling/domains")).unwrap(),
            "newbet.test\n"
        );

        // An unknown category is an error that lists what the archive has.
        let (ok, _, stderr) = import(&url, &into, &["--categories", "gambling,nope"]).await;
        assert!(!ok);
        assert!(
            stderr.contains("nope not in the archive") && stderr.contains("vpn"),
            "{stderr}"
        );
        assert_eq!(tree(&into), ["gambling", "gambling/domains"]);
    })
    .await;
}

#[tokio::test]
async fn refuses_malicious_archives_and_writes_nothing_outside() {
    bounded(async {
        let server = FileServer::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let lists = tmp.path().join("lists");
        let into = lists.join("ut1");
        let good = tmp.path().join("good.tar.gz");
        fs::write(&good, ut1_archive()).unwrap();
        let (ok, stdout, stderr) = import(good.to_str().unwrap(), &into, &[]).await;
        assert!(ok, "{stdout}\n{stderr}");
        let before = tree(&into);
        let domains_before = fs::read(into.join("gambling/domains")).unwrap();

        let absolute = tmp.path().join("abs-escape");
        let absolute = absolute.to_str().unwrap();
        let gambling = ("blacklists/gambling/domains", &b"bet.test\n"[..]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "dot-dot",
                tarball(&[
                    Item::File(gambling.0, gambling.1),
                    Item::File("../escape", b"pwned\n"),
                ]),
                "\"..\" in path",
            ),
            (
                "dot-dot-inside",
                tarball(&[
                    Item::File(gambling.0, gambling.1),
                    Item::File("blacklists/../../escape/domains", b"pwned\n"),
                ]),
                "\"..\" in path",
            ),
            (
                "absolute",
                tarball(&[
                    Item::File(gambling.0, gambling.1),
                    Item::File(absolute, b"pwned\n"),
                ]),
                "absolute path",
            ),
            (
                "link-out",
                tarball(&[
                    Item::File(gambling.0, gambling.1),
                    Item::Symlink("blacklists/evil", "../../.."),
                    Item::File("blacklists/evil/domains", b"pwned\n"),
                ]),
                "only links to a sibling category",
            ),
            (
                "link-in-category",
                tarball(&[
                    Item::File(gambling.0, gambling.1),
                    Item::Symlink("blacklists/adult/domains", "/etc/passwd"),
                ]),
                "symbolic link entries are not allowed",
            ),
            (
                "hard-link",
                tarball(&[
                    Item::File(gambling.0, gambling.1),
                    Item::HardLink("blacklists/adult/urls", "/etc/passwd"),
                ]),
                "hard link entries are not allowed",
            ),
        ];
        for (name, archive, reason) in cases {
            // Half over HTTP, half from a file: both paths refuse the same way.
            let from = if name.len() % 2 == 0 {
                let path = format!("/{name}.tar.gz");
                server.put(&path, archive);
                server.url(&path)
            } else {
                let path = tmp.path().join(format!("{name}.tar.gz"));
                fs::write(&path, archive).unwrap();
                path.display().to_string()
            };
            let (ok, stdout, stderr) = import(&from, &into, &[]).await;
            assert!(!ok, "{name}: accepted:\n{stdout}");
            assert!(
                stderr.contains(&from) && stderr.contains("refusing archive entry"),
                "{name}: error does not name the source and entry:\n{stderr}"
            );
            assert!(
                stderr.contains(reason),
                "{name}: expected {reason:?}:\n{stderr}"
            );
            assert_eq!(tree(&into), before, "{name}: previous lists changed");
            assert_eq!(
                fs::read(into.join("gambling/domains")).unwrap(),
                domains_before,
                "{name}: previous lists changed"
            );
            assert_eq!(tree(&lists).len(), 1 + before.len(), "{name}: leftovers");
            for outside in [
                tmp.path().join("escape"),
                tmp.path().join("abs-escape"),
                lists.join("escape"),
                tmp.path().parent().unwrap().join("escape"),
            ] {
                assert!(!outside.exists(), "{name}: wrote {}", outside.display());
            }
        }
    })
    .await;
}

#[tokio::test]
async fn refuses_truncated_or_broken_downloads_and_keeps_previous_lists() {
    bounded(async {
        let server = FileServer::start().await;
        let archive = ut1_archive();
        server.put("/blacklists.tar.gz", archive.clone());
        let tmp = tempfile::tempdir().unwrap();
        let lists = tmp.path().join("lists");
        let into = lists.join("ut1");
        let (ok, stdout, stderr) = import(&server.url("/blacklists.tar.gz"), &into, &[]).await;
        assert!(ok, "{stdout}\n{stderr}");
        let before = tree(&into);

        let cases = [
            // Cut in the middle of the compressed data.
            (
                "half",
                archive[..archive.len() / 2].to_vec(),
                "damaged or incomplete",
            ),
            // Only the gzip trailer (CRC-32 and length) is missing: the tar part is whole.
            (
                "trailer",
                archive[..archive.len() - 8].to_vec(),
                "damaged or incomplete",
            ),
            // One flipped byte in the compressed data.
            (
                "corrupt",
                {
                    let mut bad = archive.clone();
                    let middle = bad.len() / 2;
                    bad[middle] ^= 0x55;
                    bad
                },
                "damaged or incomplete",
            ),
            (
                "html",
                b"<!DOCTYPE html><title>Error</title>".to_vec(),
                "not a tar.gz",
            ),
        ];
        for (name, body, reason) in cases {
            let path = format!("/{name}.tar.gz");
            server.put(&path, body);
            let url = server.url(&path);
            let (ok, stdout, stderr) = import(&url, &into, &[]).await;
            assert!(!ok, "{name}: accepted:\n{stdout}");
            assert!(
                stderr.contains(&url) && stderr.contains(reason),
                "{name}: expected the URL and {reason:?}:\n{stderr}"
            );
            assert_eq!(tree(&into), before, "{name}: previous lists changed");
            assert_eq!(tree(&lists).len(), 1 + before.len(), "{name}: leftovers");
        }

        // HTTP errors and the size limit name the URL and the problem.
        let missing = server.url("/missing.tar.gz");
        let (ok, _, stderr) = import(&missing, &into, &[]).await;
        assert!(!ok);
        assert!(
            stderr.contains(&missing) && stderr.contains("404"),
            "{stderr}"
        );
        server.put("/big.tar.gz", crate::kit::payload(2 << 20));
        let big = server.url("/big.tar.gz");
        let (ok, _, stderr) = import(&big, &into, &["--max-mib", "1"]).await;
        assert!(!ok);
        assert!(
            stderr.contains(&big) && stderr.contains("more than the limit"),
            "{stderr}"
        );
        assert_eq!(tree(&into), before);

        // Nothing listens on port 9 of loopback: a connection error, not a hang.
        let refused = "http://127.0.0.1:9/blacklists.tar.gz";
        let (ok, _, stderr) = import(refused, &into, &["--timeout", "10s"]).await;
        assert!(!ok);
        assert!(
            stderr.contains(refused) && stderr.contains("download failed"),
            "{stderr}"
        );
        assert_eq!(tree(&into), before);
    })
    .await;
}
