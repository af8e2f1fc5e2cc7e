//! The HTTP client: plain HTTP on loopback, or TLS with the system's roots or a CA file, and
//! an API token sent as a bearer token.

use crate::error::{Error, Result};
use crate::server::file_limit::FileLimit;
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// One row of a query's answer, by column name (the server leaves NULL columns out).
pub type Row = Map<String, Value>;

/// Where the server is and how to talk to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    pub url: String,
    /// The API token, if the server requires one.
    pub token: Option<String>,
    /// PEM file of the certificate authorities to trust instead of the system's (https only).
    pub ca_file: Option<std::path::PathBuf>,
    /// How long one request may take, connection included.
    pub timeout: Duration,
}

/// A server's answer that is not a success, or no answer at all.
#[derive(Debug, Clone)]
pub enum HttpError {
    /// No answer: refused, reset, timed out, or TLS failed.
    NoAnswer(String),
    /// An answer with a status other than 2xx.
    Status { status: u16, body: String },
    /// A 2xx answer that is not what was asked for (not JSON, not an array).
    Unexpected(String),
}

impl HttpError {
    /// The query file limit, if this is the server refusing a query for it.
    pub fn file_limit(&self) -> Option<FileLimit> {
        match self {
            HttpError::Status { status, body } => FileLimit::recognise(*status, body),
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::NoAnswer(why) => write!(f, "no answer: {why}"),
            HttpError::Status { status, body } => {
                let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
                let short: String = one_line.chars().take(300).collect();
                write!(f, "HTTP {status}: {short}")
            }
            HttpError::Unexpected(what) => write!(f, "unexpected answer: {what}"),
        }
    }
}

/// A client for one server.
pub struct Client {
    endpoint: Endpoint,
    agent: ureq::Agent,
    requests: std::cell::Cell<u64>,
}

impl Client {
    /// A client for `endpoint`; fails if the CA file cannot be read.
    pub fn new(endpoint: Endpoint) -> Result<Client> {
        use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
        let roots = match &endpoint.ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| Error::io(path, "read the CA file", e))?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(Error::at(path, "no PEM certificate in the CA file"));
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(endpoint.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("kompactor/", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        Ok(Client {
            agent: config.into(),
            endpoint,
            requests: std::cell::Cell::new(0),
        })
    }

    /// The server's address, as given.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// How many requests were sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// `GET path?params`: the status and the body. A refused or reset connection is tried three
    /// times, a second apart; a request that timed out is not repeated.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, String), HttpError> {
        let url = format!("{}{path}", self.endpoint.url);
        let mut last = String::new();
        for attempt in 0..3 {
            self.requests.set(self.requests.get() + 1);
            let mut req = self.agent.get(&url).query_pairs(params.iter().copied());
            if let Some(t) = &self.endpoint.token {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp
                        .body_mut()
                        .with_config()
                        .limit(1 << 30)
                        .read_to_string()
                        .map_err(|e| {
                            HttpError::NoAnswer(format!("the answer from {url} broke off: {e}"))
                        })?;
                    return Ok((status, body));
                }
                Err(ureq::Error::Timeout(_)) => {
                    return Err(HttpError::NoAnswer(format!(
                        "{url} did not answer within {}s",
                        self.endpoint.timeout.as_secs()
                    )))
                }
                Err(e @ (ureq::Error::Io(_) | ureq::Error::ConnectionFailed)) => {
                    last = format!("{url}: {e}");
                }
                Err(e) => return Err(HttpError::NoAnswer(format!("{url}: {e}"))),
            }
            if attempt < 2 {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Err(HttpError::NoAnswer(last))
    }

    /// `POST path?params` with a text body (line protocol, say): the status and the body. Not
    /// repeated: a write that timed out may have been taken.
    pub fn post(
        &self,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, String), HttpError> {
        let url = format!("{}{path}", self.endpoint.url);
        self.requests.set(self.requests.get() + 1);
        let mut req = self.agent.post(&url).query_pairs(params.iter().copied());
        if let Some(t) = &self.endpoint.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req
            .content_type("text/plain; charset=utf-8")
            .send(body)
            .map_err(|e| HttpError::NoAnswer(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Ok((status, text))
    }

    /// Whether `GET /health` answers 200 (one attempt, at most five seconds' wait).
    pub fn healthy(&self) -> bool {
        let url = format!("{}/health", self.endpoint.url);
        let mut req = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .build();
        if let Some(t) = &self.endpoint.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        req.call().is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// The rows of a JSON-array answer to `GET path?params`.
    pub fn rows(&self, path: &str, params: &[(&str, &str)]) -> Result<Vec<Row>, HttpError> {
        let (status, body) = self.get(path, params)?;
        if !(200..300).contains(&status) {
            return Err(HttpError::Status { status, body });
        }
        let body = body.trim();
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(body).map_err(|e| {
            HttpError::Unexpected(format!(
                "not JSON ({e}): {}",
                body.chars().take(200).collect::<String>()
            ))
        })?;
        let Value::Array(items) = v else {
            return Err(HttpError::Unexpected(format!(
                "expected a JSON array: {}",
                body.chars().take(200).collect::<String>()
            )));
        };
        items
            .into_iter()
            .map(|item| match item {
                Value::Object(m) => Ok(m),
                other => Err(HttpError::Unexpected(format!(
                    "a row that is not an object: {other}"
                ))),
            })
            .collect()
    }

    /// The rows `sql` returns on database `db`.
    pub fn query(&self, db: &str, sql: &str) -> Result<Vec<Row>, HttpError> {
        self.rows(
            "/api/v3/query_sql",
            &[("db", db), ("q", sql), ("format", "json")],
        )
    }
}

/// The API token: from `file` (the token alone, or the JSON an `influxdb3 create token
/// --offline --output-file` writes, with a `token` field), else from `INFLUXDB3_AUTH_TOKEN`.
/// Never from a command line, where every user of the machine could read it.
pub fn load_token(file: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = file else {
        return Ok(std::env::var("INFLUXDB3_AUTH_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_string()));
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "read the token file", e))?;
    let text = text.trim();
    let token = if text.starts_with('{') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::at(path, format!("the token file is JSON but not valid: {e}")))?;
        v.get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::at(path, "the token file's JSON has no \"token\" field"))?
    } else {
        text.to_string()
    };
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Error::at(
            path,
            "the token file holds no token (one word, or JSON with a \"token\" field)",
        ));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_a_plain_file_or_the_servers_json() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("t");
        std::fs::write(&plain, "apiv3_abc\n").unwrap();
        assert_eq!(
            load_token(Some(&plain)).unwrap().as_deref(),
            Some("apiv3_abc")
        );
        let json = dir.path().join("t.json");
        std::fs::write(&json, r#"{"token": "apiv3_xyz", "help_msg": "..."}"#).unwrap();
        assert_eq!(
            load_token(Some(&json)).unwrap().as_deref(),
            Some("apiv3_xyz")
        );
        std::fs::write(&json, r#"{"name": "x"}"#).unwrap();
        assert!(load_token(Some(&json)).is_err());
        std::fs::write(&plain, "two words").unwrap();
        assert!(load_token(Some(&plain)).is_err());
        assert!(load_token(Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let e = Client::new(Endpoint {
            url: "https://127.0.0.1:1".into(),
            token: None,
            ca_file: Some(ca),
            timeout: Duration::from_secs(1),
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn a_closed_port_is_no_answer() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(Endpoint {
            url: format!("http://127.0.0.1:{port}"),
            token: None,
            ca_file: None,
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        assert!(!c.healthy());
        assert!(matches!(c.get("/health", &[]), Err(HttpError::NoAnswer(_))));
    }
}
