//! A headless Chromium driven through ChromeDriver's W3C WebDriver HTTP interface
//! (a few JSON calls over reqwest), for the admin interface's browser tests and the
//! block page over HTTPS. Pages are only ever loaded from 127.0.0.1, directly or
//! through a SafeGate on 127.0.0.1 ([`Options::proxy`]); screenshots go to
//! `target/screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    _driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    _profile: tempfile::TempDir,
}

/// Whether the browser tests must run (CI installs Chromium and ChromeDriver) rather
/// than skip when they are missing.
fn required() -> bool {
    std::env::var_os("SAFEGATE_REQUIRE_OPS_TOOLS").is_some()
}

/// Reads ChromeDriver's output until it names its port, then drains the rest.
async fn driver_port(stdout: tokio::process::ChildStdout) -> u16 {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().parse::<u16>().ok();
            }
        }
        None
    })
    .await;
    let port = read
        .ok()
        .flatten()
        .expect("chromedriver did not say its port");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    port
}

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let text = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text:?} from {url}"))
}

/// How the browser reaches sites and what it trusts beyond the system's roots.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// An HTTP proxy on loopback for every address (default: no proxy at all).
    pub proxy: Option<std::net::SocketAddr>,
    /// Base64 SHA-256 hashes of public keys (SPKI) trusted for HTTPS: a chain that
    /// holds a certificate with one of these keys is accepted
    /// (`--ignore-certificate-errors-spki-list`; the school CA's key covers every leaf
    /// SafeGate makes, since it sends the CA certificate in its chain).
    pub trusted_spki: Vec<String>,
    /// The languages the browser asks for (`Accept-Language`), e.g. `cy`; default
    /// Chromium's own.
    pub accept_language: Option<String>,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session; None (the test skips)
    /// when they are not installed and not required.
    pub async fn start() -> Option<Browser> {
        Self::start_with(&Options::default()).await
    }

    /// As [`Browser::start`], through a proxy and trusting keys as `options` says.
    pub async fn start_with(options: &Options) -> Option<Browser> {
        let present = |path: &str| std::path::Path::new(path).exists();
        if !present("/usr/bin/chromedriver") || !present("/usr/bin/chromium") {
            assert!(
                !required(),
                "chromium and chromium-driver are required (apt-get install chromium chromium-driver)"
            );
            eprintln!("SKIPPED: chromium or chromedriver is not installed");
            return None;
        }
        // Port 0: ChromeDriver picks a free port itself and says which, so no other
        // test can take it between a probe and the start.
        let mut driver = Command::new("/usr/bin/chromedriver")
            .arg("--port=0")
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let port = driver_port(driver.stdout.take().unwrap()).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1200,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        match options.proxy {
            Some(proxy) => {
                assert!(
                    proxy.ip().is_loopback(),
                    "the browser's proxy must be on loopback"
                );
                args.push(format!("--proxy-server=http://{proxy}"));
            }
            None => args.push("--no-proxy-server".to_owned()),
        }
        if !options.trusted_spki.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                options.trusted_spki.join(",")
            ));
        }
        let mut chrome = json!({ "binary": "/usr/bin/chromium", "args": args });
        if let Some(languages) = &options.accept_language {
            chrome["args"]
                .as_array_mut()
                .unwrap()
                .push(json!(format!("--accept-lang={languages}")));
            chrome["prefs"] = json!({ "intl.accept_languages": languages });
        }
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": chrome
            }}
        });
        let created = post_json(&http, &format!("{base}/session"), &capabilities).await;
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Some(Browser {
            _driver: driver,
            http,
            session,
            base,
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    /// A WebDriver call; Err holds the error and message WebDriver answered with.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            return Err(format!("{error}: {}", answer["value"]["message"]));
        }
        Ok(answer["value"].clone())
    }

    /// Loads `url` expecting the browser to fail to (a network or certificate error);
    /// returns the error as Chromium reports it (e.g. `net::ERR_TUNNEL_CONNECTION_FAILED`),
    /// or the text of the error page it shows instead.
    pub async fn goto_failing(&self, url: &str) -> String {
        self.settle().await;
        match self
            .try_call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
        {
            Err(error) => error,
            Ok(_) => self.text().await,
        }
    }

    /// Loads `url` and waits until the browser shows it, fully loaded (a navigation
    /// still in flight from an earlier click must not overtake it).
    pub async fn goto(&self, url: &str) {
        self.settle().await;
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
        self.settle().await;
        let shown = self.url().await;
        assert!(
            shown.starts_with(url.split('#').next().unwrap_or(url)),
            "asked for {url}, the browser shows {shown}"
        );
    }

    /// Waits until the current document has finished loading and no navigation is
    /// pending (the URL is stable over two polls).
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            let state = self.script("return document.readyState").await;
            let url = self.url().await;
            if state == "complete" && url == last {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page did not settle ({state} at {url})"
            );
            last = url;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Types `text` into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Chooses the option `value` of the drop-down `css`, as a person picking it.
    pub async fn choose(&self, css: &str, value: &str) {
        let script = format!(
            "const s = document.querySelector({}); if (!s) return null; s.value = {}; s.dispatchEvent(new Event('change')); return s.value;",
            json!(css),
            json!(value)
        );
        let chosen = self.script(&script).await;
        assert_eq!(chosen, json!(value), "no option {value} in {css}");
    }

    /// The value of the form field `css` as it is now.
    pub async fn value(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.value : null;",
            json!(css)
        );
        self.script(&script)
            .await
            .as_str()
            .unwrap_or_else(|| panic!("no field {css}"))
            .to_owned()
    }

    /// Clicks the element `css` (a submit button loads the next page).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the page as it is now.
    pub async fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 10 s) until the page's text contains `needle`, as after a click
    /// that loads a new page; returns the text.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                self.settle().await;
                let text = self.text().await;
                assert!(
                    text.contains(needle),
                    "the page showed {needle:?} and then moved on to:\n{text}"
                );
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {needle:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address of the page now.
    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Presses Tab `times` times and returns, after each, the focused element as
    /// `tag text` (keyboard use: what a person reaches, in order).
    pub async fn tab_order(&self, times: usize) -> Vec<String> {
        self.script("document.activeElement && document.activeElement.blur(); window.focus();")
            .await;
        let mut reached = Vec::new();
        for _ in 0..times {
            let tab = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
                { "type": "keyDown", "value": "\u{E004}" }, { "type": "keyUp", "value": "\u{E004}" }
            ]}]});
            self.call(reqwest::Method::POST, "/actions", Some(tab))
                .await;
            let focused = self
                .script("const e = document.activeElement; return e.tagName + ' ' + (e.innerText || e.value || '').trim().slice(0, 40);")
                .await;
            reached.push(focused.as_str().unwrap_or_default().to_owned());
        }
        reached
    }

    /// Runs axe-core (WCAG 2.0, 2.1 and 2.2 A and AA rules) on the page and returns
    /// its violations as `rule: help (n elements)`; None when axe-core is not
    /// installed and not required (`.ci/run` installs it into `target/axe`).
    pub async fn axe_violations(&self) -> Option<Vec<String>> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/axe/node_modules/axe-core/axe.min.js");
        let Ok(source) = std::fs::read_to_string(&path) else {
            assert!(!required(), "axe-core is required: {}", path.display());
            eprintln!("SKIPPED: axe-core is not installed at {}", path.display());
            return None;
        };
        self.script(&source).await;
        let run = json!({ "script": "const done = arguments[arguments.length - 1];\
            axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] } })\
              .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' (' + v.nodes.length + ' elements: ' + v.nodes.map(n => n.target.join(' ')).join(', ') + ')')))\
              .catch(e => done(['axe failed: ' + e]));", "args": [] });
        let found = self
            .call(reqwest::Method::POST, "/execute/async", Some(run))
            .await;
        Some(
            found
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Saves a PNG of the window as `target/screenshots/<name>.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Browser {
    /// Saves a PNG of the element `css` alone (scrolled into view) as
    /// `target/screenshots/<name>.png`; returns the path.
    pub async fn element_screenshot(&self, css: &str, name: &str) -> PathBuf {
        let id = self.element(css).await;
        let encoded = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/screenshot"),
                None,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The page printed to PDF on A4 (WebDriver's print), as the browser's print
    /// dialog would with the page's print styles.
    pub async fn print_pdf(&self) -> Vec<u8> {
        let encoded = self
            .call(
                reqwest::Method::POST,
                "/print",
                Some(json!({ "page": { "width": 21.0, "height": 29.7 }, "background": false })),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; ChromeDriver is killed with its handle.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .map(|client| client.delete(url).send());
        })
        .join();
    }
}
