//! SafeGate's content analysis against Debian's e2guardian on the same weighted
//! lists (the shipped starter lists, included into e2guardian's weightedphraselist),
//! the same limit (100) and the same corpus of 230 generated pages served by one
//! local origin: school pages, pages over and under the limit, context phrases,
//! phrases split across TCP writes and across tags, gzip pages, Windows-1252 pages,
//! and the kinds only SafeGate reads (UTF-16, brotli, leetspeak and accents).
//!
//! Every page of the kinds both read must get the same answer from both. The other
//! kinds are the listed disagreements: SafeGate blocks, e2guardian lets them through
//! because it does not decode them (see benches/README.md, "Content analysis").
//! Skipped, with a note, where e2guardian is not installed.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::kit::bounded;
use crate::kit::pages::{Page, PageOrigin};
use crate::kit::process::SafeGate;

/// A kind of page: how many, whether over the limit, and whether e2guardian is
/// expected to read it as SafeGate does.
struct Kind {
    name: &'static str,
    pages: Vec<Page>,
    blocked: bool,
    e2guardian_reads: bool,
}

const BENIGN: [&str; 12] = [
    "Sports day is on Friday: bring water and a hat.",
    "Year 6 SATs revision club meets in the library after school.",
    "The PTA summer fair raised money for new reading books.",
    "Homework: fractions worksheet, due Monday.",
    "Our trip to the science museum was a great success.",
    "Harvest festival donations go to the local food bank.",
    "Choir practice moves to Wednesday lunchtime this week.",
    "Please label uniform with your child's name.",
    "The school council voted for a new playground bench.",
    "Reception children planted sunflowers in the garden.",
    "Online safety: talk to a trusted adult if something worries you.",
    "Maths lesson plan: probability with dice and coins.",
];

/// Phrase sets over the limit (each sums past 100 in the starter lists).
const OVER: [&str; 8] = [
    "Free porn videos, porn tube, hot milf and live sex cams.",
    "Online casino with casino bonus, free spins and a no deposit bonus. Bet now!",
    "Painless suicide and suicide methods: how to kill yourself.",
    "Thinspiration and thinspo: pro ana tips, starve yourself.",
    "Join the jihad, martyrdom operation, infidels must die.",
    "Racial holy war, RAHOWA, heil hitler, white power.",
    "Nude girls, naked girls, webcam sex and sex chat.",
    "Sportsbook: sports betting, online betting, place your bet.",
];

/// Phrases under the limit.
const UNDER: [&str; 6] = [
    "The casino scene in the film was filmed in Monaco.",
    "A poker face is hard to keep.",
    "The word porn appears in this media studies glossary.",
    "The jackpot in the school raffle was a bike.",
    "A martyr in the history of the church.",
    "Roulette and blackjack are games of chance: maths lesson on probability.",
];

/// Over-limit phrases cancelled by context.
const CONTEXT: [&str; 4] = [
    "Sex education lesson plan: relationships and sex education, puberty, consent, sexual health, contraception.",
    "Gambling addiction help: problem gambling, GamCare, Gamblers Anonymous. Casino, slots, free spins.",
    "Suicide prevention: if you are suicidal, call Samaritans or Childline, you are not alone. Mental health support and recovery.",
    "Prevent duty lesson plan: radicalisation, educate against hate, counter terrorism. Caliphate, jihadi, martyr.",
];

fn html(i: usize, text: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><title>Page {i}</title><style>p {{ color: #333 }}</style></head>\
<body><nav><a href=\"/\">Home</a></nav><h1>Notice {i}</h1><p>{}</p><p>{text}</p><footer>School office</footer></body></html>",
        // The first ten: the last two hold context phrases (online safety, lesson plan).
        BENIGN[i % 10]
    )
}

fn headers(content_type: &str, encoding: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
    if let Some(encoding) = encoding {
        headers.push(("content-encoding".to_owned(), encoding.to_owned()));
    }
    headers
}

fn page(content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Page {
    Page {
        headers: headers(content_type, encoding),
        chunks: vec![body],
        ..Page::default()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// Splits every word of a phrase text with inline tags between its words.
fn tagged(text: &str) -> String {
    text.split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i % 2 == 0 {
                format!("<b>{w}</b>")
            } else {
                format!("<span class=\"x\">{w}</span>")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn leet(text: &str) -> String {
    text.replace('o', "0").replace('e', "3").replace('a', "4")
}

fn kinds() -> Vec<Kind> {
    let over = |i: usize| OVER[i % OVER.len()];
    let html_page = |body: String| page("text/html; charset=utf-8", None, body.into_bytes());
    let mut kinds = vec![
        Kind {
            name: "benign school page",
            pages: (0..60)
                .map(|i| html_page(html(i, BENIGN[(i + 5) % 12])))
                .collect(),
            blocked: false,
            e2guardian_reads: true,
        },
        Kind {
            name: "over the limit",
            pages: (0..40).map(|i| html_page(html(i, over(i)))).collect(),
            blocked: true,
            e2guardian_reads: true,
        },
        Kind {
            name: "under the limit",
            pages: (0..30)
                .map(|i| html_page(html(i, UNDER[i % UNDER.len()])))
                .collect(),
            blocked: false,
            e2guardian_reads: true,
        },
        Kind {
            name: "context cancels",
            pages: (0..20)
                .map(|i| html_page(html(i, CONTEXT[i % CONTEXT.len()])))
                .collect(),
            blocked: false,
            e2guardian_reads: true,
        },
        Kind {
            name: "split across TCP writes",
            pages: (0..20)
                .map(|i| {
                    let body = html(i, over(i));
                    Page {
                        headers: headers("text/html", None),
                        chunks: body
                            .as_bytes()
                            .chunks(3 + i % 5)
                            .map(<[u8]>::to_vec)
                            .collect(),
                        ..Page::default()
                    }
                })
                .collect(),
            blocked: true,
            e2guardian_reads: true,
        },
        Kind {
            name: "split across tags",
            pages: (0..15)
                .map(|i| html_page(html(i, &tagged(over(i)))))
                .collect(),
            blocked: true,
            e2guardian_reads: true,
        },
        Kind {
            name: "plain text",
            pages: (0..10)
                .map(|i| page("text/plain", None, over(i).as_bytes().to_vec()))
                .collect(),
            blocked: true,
            e2guardian_reads: true,
        },
        Kind {
            name: "gzip",
            pages: (0..15)
                .map(|i| page("text/html", Some("gzip"), gzip(html(i, over(i)).as_bytes())))
                .collect(),
            blocked: true,
            e2guardian_reads: true,
        },
        Kind {
            name: "windows-1252",
            pages: (0..10)
                .map(|i| {
                    let text = format!("Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e. {}", over(i));
                    let text = html(i, &text);
                    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
                    page("text/html; charset=windows-1252", None, bytes.into_owned())
                })
                .collect(),
            blocked: true,
            e2guardian_reads: true,
        },
    ];
    kinds.extend([
        Kind {
            name: "UTF-16 with a byte-order mark",
            pages: (0..5)
                .map(|i| {
                    let mut body = vec![0xFF, 0xFE];
                    for unit in html(i, over(i)).encode_utf16() {
                        body.extend(unit.to_le_bytes());
                    }
                    page("text/html", None, body)
                })
                .collect(),
            blocked: true,
            e2guardian_reads: false,
        },
        Kind {
            name: "brotli",
            pages: (0..5)
                .map(|i| page("text/html", Some("br"), brotli(html(i, over(i)).as_bytes())))
                .collect(),
            blocked: true,
            e2guardian_reads: false,
        },
        Kind {
            name: "leetspeak",
            pages: (0..5).map(|i| html_page(html(i, &leet(over(i))))).collect(),
            blocked: true,
            e2guardian_reads: false,
        },
        Kind {
            name: "accents",
            pages: (0..5)
                .map(|i| {
                    html_page(html(
                        i,
                        &over(i).replace('o', "\u{f6}").replace('a', "\u{e0}"),
                    ))
                })
                .collect(),
            blocked: true,
            e2guardian_reads: false,
        },
    ]);
    kinds
}

/// Starts e2guardian on `port` with Debian's configuration, the starter lists as its
/// only weighted phrases, no banned or exception phrases, and limit 100.
fn start_e2guardian(dir: &Path, port: u16, https_port: u16) -> std::process::Child {
    let conf = dir.join("conf");
    let copied = std::process::Command::new("cp")
        .args(["-r", "/etc/e2guardian/."])
        .arg(&conf)
        .status()
        .unwrap();
    assert!(copied.success());
    let repo = std::path::absolute(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap();
    let includes: String = ["pornography", "gambling", "self-harm", "extremism"]
        .iter()
        .map(|list| {
            format!(
                ".Include<{}/blocklists/content/{list}.txt>\n",
                repo.display()
            )
        })
        .collect();
    std::fs::write(conf.join("weighted"), includes).unwrap();
    std::fs::write(conf.join("empty"), "").unwrap();
    let c = conf.display();
    let main = std::fs::read_to_string(conf.join("e2guardian.conf")).unwrap();
    let mut main: String = main
        .lines()
        .filter(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            ![
                "filterip",
                "filterports",
                "pidfilename",
                "loglocation",
                "nodaemon",
                "nologger",
                "loglevel",
                "filecachedir",
            ]
            .contains(&key)
        })
        .map(|line| format!("{}\n", line.replace("/etc/e2guardian/", &format!("{c}/"))))
        .collect();
    main.push_str(&format!(
        "filterip = 127.0.0.1\nfilterports = {port}\ntransparenthttpsport = {https_port}\npidfilename = '{d}/e2guardian.pid'\nloglocation = '{d}/access.log'\nfilecachedir = '{d}'\nnodaemon = on\nnologger = off\nloglevel = 0\n",
        d = dir.display()
    ));
    std::fs::write(conf.join("e2guardian.conf"), main).unwrap();
    let group = std::fs::read_to_string(conf.join("e2guardianf1.conf")).unwrap();
    let group: String = group
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            let line = match key {
                "bannedphraselist" | "exceptionphraselist" => format!("{key} = '{c}/empty'"),
                "weightedphraselist" => format!("{key} = '{c}/weighted'"),
                "naughtynesslimit" => format!("{key} = 100"),
                _ => line.replace("/etc/e2guardian/", &format!("{c}/")),
            };
            format!("{line}\n")
        })
        .collect();
    std::fs::write(conf.join("e2guardianf1.conf"), group).unwrap();
    // e2guardian drops to its own user: it must read the copy.
    let opened = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(opened.success());
    let out = std::fs::File::create(dir.join("out.log")).unwrap();
    std::process::Command::new("/usr/sbin/e2guardian")
        .args(["-N", "-c"])
        .arg(conf.join("e2guardian.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap()
}

async fn e2guardian_ready(port: u16, dir: &Path) -> reqwest::Client {
    let proxy = reqwest::Proxy::http(format!("http://127.0.0.1:{port}")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(proxy)
        .no_gzip()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "e2guardian did not start: {}",
            std::fs::read_to_string(dir.join("out.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
}

#[tokio::test]
async fn safegate_and_e2guardian_block_the_same_pages() {
    if !Path::new("/usr/sbin/e2guardian").exists() {
        assert!(
            std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_none(),
            "e2guardian is not installed (SAFEGATE_REQUIRE_OPS_TOOLS is set)"
        );
        eprintln!(
            "e2guardian is not installed (apt-get install e2guardian): differential test skipped"
        );
        return;
    }
    bounded(async {
        let origin = PageOrigin::start().await;
        let kinds = kinds();
        let total: usize = kinds.iter().map(|k| k.pages.len()).sum();
        assert!(total >= 200, "{total} pages");
        for (k, kind) in kinds.iter().enumerate() {
            for (i, page) in kind.pages.iter().enumerate() {
                origin.add(&format!("/{k}/{i}"), page.clone());
            }
        }
        // Under cargo's target tmp dir: readable by e2guardian's own user, left for a
        // look when the test fails, replaced by the next run.
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2guardian-differential");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, https_port) = (free(), free());
        let mut e2g = start_e2guardian(&dir, port, https_port);
        let e2g_client = e2guardian_ready(port, &dir).await;
        let safegate = SafeGate::start(&[]).await;
        let sg_client = safegate.client();
        let mut report = String::new();
        let mut wrong = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            let (mut sg_blocked, mut e2g_blocked, mut agree) = (0, 0, 0);
            for i in 0..kind.pages.len() {
                let url = format!("http://127.0.0.1:{}/{k}/{i}", origin.addr.port());
                let sg = sg_client.get(&url).send().await.unwrap();
                let sg_block = sg.status() == 403
                    && sg.headers().get("x-safegate-rule").is_some_and(|r| r == "content:pupil");
                let e2 = e2g_client.get(&url).send().await.unwrap().text().await.unwrap_or_default();
                let e2_block = e2.contains("Blocked by Content Checking") || e2.contains("deemed inappropriate");
                sg_blocked += usize::from(sg_block);
                e2g_blocked += usize::from(e2_block);
                agree += usize::from(sg_block == e2_block);
                if sg_block != kind.blocked {
                    wrong.push(format!("SafeGate on {} page {i}: blocked {sg_block}", kind.name));
                }
                if kind.e2guardian_reads && sg_block != e2_block {
                    wrong.push(format!("disagreement on {} page {i}: SafeGate {sg_block}, e2guardian {e2_block}", kind.name));
                }
            }
            report.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                kind.name,
                kind.pages.len(),
                sg_blocked,
                e2g_blocked,
                agree
            ));
        }
        let _ = e2g.kill();
        let _ = e2g.wait();
        println!("| kind | pages | SafeGate blocked | e2guardian blocked | same answer |\n|---|---|---|---|---|\n{report}");
        assert!(wrong.is_empty(), "{wrong:#?}\n{report}");
    })
    .await;
}
