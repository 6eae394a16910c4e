//! A ClickHouse client over its HTTP interface: a query is POSTed as the body (or in
//! the `query` parameter, with rows as the body for an insert); a status other than
//! 200 carries ClickHouse's error text, which is passed on. reqwest (hyper underneath)
//! brings TLS with rustls, a client certificate and an extra CA.

use std::time::Duration;

use crate::ExportError;
use crate::config::ClickHouseConfig;

/// One ClickHouse server, as configured; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClickHouse {
    http: reqwest::Client,
    url: String,
    user: String,
    password: Option<String>,
    /// A client certificate is set (for the hint when a handshake fails).
    identity: bool,
}

/// Reads a file named in the configuration.
fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|source| ExportError::File {
        key: key.to_owned(),
        path: path.display().to_string(),
        source,
    })
}

impl ClickHouse {
    /// A client for `config` (reads the password file, the client certificate and the
    /// CA file now).
    pub fn new(config: &ClickHouseConfig) -> Result<Self, ExportError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .pool_idle_timeout(Duration::from_secs(2))
            .no_proxy()
            .use_rustls_tls();
        if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
            let mut pem = read(cert, "export.clickhouse.client_cert")?;
            pem.push(b'\n');
            pem.extend(read(key, "export.clickhouse.client_key")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(ExportError::Tls)?;
            builder = builder.identity(identity);
        }
        if let Some(ca) = &config.ca_file {
            let pem = read(ca, "export.clickhouse.ca_file")?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(ExportError::Tls)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let password = match (&config.password, &config.password_file) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(file)) => {
                let text = read(file, "export.clickhouse.password_file")?;
                let text = String::from_utf8_lossy(&text);
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            (None, None) => None,
        };
        Ok(Self {
            http: builder.build().map_err(ExportError::Tls)?,
            url: config.url.trim_end_matches('/').to_owned(),
            user: config.user.clone(),
            password,
            identity: config.client_cert.is_some(),
        })
    }

    /// Runs `sql` and returns what ClickHouse answered (for `SELECT`, the rows in the
    /// query's `FORMAT`).
    pub async fn query(&self, sql: &str) -> Result<String, ExportError> {
        let request = self
            .http
            .post(format!("{}/", self.url))
            .body(sql.to_owned());
        self.send(request).await
    }

    /// Runs a `SELECT` whose rows are JSON: 64-bit numbers come as numbers, not text.
    pub async fn select(&self, sql: &str) -> Result<String, ExportError> {
        let request = self
            .http
            .post(format!("{}/", self.url))
            .query(&[("output_format_json_quote_64bit_integers", "0")])
            .body(sql.to_owned());
        self.send(request).await
    }

    /// Inserts `rows` (JSONEachRow, one object a line) into `table`.
    pub async fn insert(&self, table: &str, rows: Vec<u8>) -> Result<(), ExportError> {
        self.insert_as(&format!("INSERT INTO {table} FORMAT JSONEachRow"), rows)
            .await
    }

    /// Inserts `rows` (RowBinary, the values of `columns` in that order) into `table`.
    pub async fn insert_binary(
        &self,
        table: &str,
        columns: &str,
        rows: Vec<u8>,
    ) -> Result<(), ExportError> {
        self.insert_as(
            &format!("INSERT INTO {table} ({columns}) FORMAT RowBinary"),
            rows,
        )
        .await
    }

    /// Runs the insert statement `query` with `rows` as its data.
    async fn insert_as(&self, query: &str, rows: Vec<u8>) -> Result<(), ExportError> {
        let request = self
            .http
            .post(format!("{}/", self.url))
            .query(&[("query", query)])
            .body(rows);
        self.send(request).await.map(drop)
    }

    /// The server's version, as `SELECT version()` says it (`18.16.1`).
    pub async fn version(&self) -> Result<String, ExportError> {
        Ok(self.query("SELECT version()").await?.trim().to_owned())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, ExportError> {
        let request = request.basic_auth(&self.user, self.password.as_deref());
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ExportError::Unreachable(error_chain(&e)))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(ExportError::Refused {
                status: status.as_u16(),
                message: text.trim().chars().take(500).collect(),
            })
        }
    }
}

impl ClickHouse {
    /// A failed request as [`ExportError::Unreachable`], with what to do first when
    /// the TLS handshake failed.
    fn unreachable(&self, error: &reqwest::Error) -> ExportError {
        let chain = error_chain(error);
        match tls_hint(&chain, self.identity) {
            Some(hint) => ExportError::Unreachable(format!("{hint} ({chain})")),
            None => ExportError::Unreachable(chain),
        }
    }
}

/// Alerts a TLS server sends when it does not take the client's certificate (rustls
/// names them `received fatal alert: <name>`).
const CERTIFICATE_REFUSALS: [&str; 6] = [
    "CertificateRequired",
    "UnknownCA",
    "BadCertificate",
    "CertificateUnknown",
    "CertificateExpired",
    "AccessDenied",
];

/// What to set when a handshake failed, read from the error's text: the server's
/// certificate not trusted, or this school's refused (or missing); `None` otherwise.
fn tls_hint(chain: &str, identity: bool) -> Option<&'static str> {
    if chain.contains("invalid peer certificate") {
        return Some(
            "ClickHouse's certificate is not trusted: set export.clickhouse.ca_file to the \
             CA that signed it",
        );
    }
    let alert = |name: &str| chain.contains(&format!("received fatal alert: {name}"));
    let refused = CERTIFICATE_REFUSALS.iter().any(|name| alert(name));
    match (refused || alert("HandshakeFailure"), identity) {
        (true, false) => Some(
            "the server wants a client certificate and no client certificate is set: set \
             export.clickhouse.client_cert and client_key",
        ),
        // A handshake failure alone may be ciphers or versions: no guess then.
        (true, true) if refused => Some(
            "the server (ClickHouse, or a TLS terminator in front of it) refused this \
             school's client certificate: check that export.clickhouse.client_cert is signed \
             by the CA the server trusts and is still valid",
        ),
        _ => None,
    }
}

/// An error and its causes on one line (reqwest's own text says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::tls_hint;

    #[test]
    fn handshake_failures_say_what_to_set() {
        let untrusted = "error sending request: invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(untrusted, true).is_some_and(|h| h.contains("ca_file")));
        let required = "connection error: received fatal alert: CertificateRequired";
        assert!(tls_hint(required, false).is_some_and(|h| h.contains("no client certificate")));
        let unknown = "connection error: received fatal alert: UnknownCA";
        assert!(tls_hint(unknown, true).is_some_and(|h| h.contains("refused this school's")));
        assert_eq!(
            tls_hint("received fatal alert: HandshakeFailure", true),
            None
        );
        assert_eq!(
            tls_hint("tcp connect error: Connection refused", false),
            None
        );
    }
}
