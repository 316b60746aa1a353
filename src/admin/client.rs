//! The admin API's client, used by `jetstream-ingestor admin …` (and the tests): one blocking
//! HTTP/1.1 request per call over `std::net::TcpStream`, `Connection: close`, the bearer
//! token from the same settings the server reads. `Host` is the address dialled (a loopback
//! or the server's own address, which the server's host check accepts) and commands carry
//! `Content-Type: application/json`.
//!
//! Why not `awc`: the admin API is plain HTTP on a loopback or private address and the
//! server is ours, so the client needs a request line, two headers, and a body framed by
//! `Content-Length`, chunks or end of stream. `awc` would add actix's client stack (and
//! async runtime set-up) to the CLI path for that.
//!
//! Failure: connect/read/write errors and timeouts (`ClientError::Io`), and answers that are
//! not HTTP (`ClientError::Protocol`). HTTP error statuses are not errors here: the caller
//! decides (the CLI prints them and exits non-zero).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::auth::Secret;
use super::config::AdminConfig;

/// Bodies larger than this are refused (`/metrics` is the largest answer, tens of KiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cause is in the message (so not a `source`: it would read twice in a chain).
    #[error("admin API at {addr}: {error}")]
    Io {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("admin API at {addr}: not an HTTP answer: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Talks to one admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<Secret>,
    timeout: Duration,
}

impl AdminClient {
    /// From the `[admin]` settings: an unspecified listen address (`0.0.0.0`, `::`) is
    /// reached through the loopback of the same family.
    pub fn from_config(cfg: &AdminConfig) -> AdminClient {
        AdminClient::new(cfg.listen, cfg.token.clone())
    }

    pub fn new(addr: SocketAddr, token: Option<Secret>) -> AdminClient {
        let addr = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
            }
            _ => addr,
        };
        AdminClient {
            addr,
            token,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> AdminClient {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.send("GET", path, None)
    }

    pub fn post(
        &self,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        self.send("POST", path, json)
    }

    pub fn put(&self, path: &str, json: &serde_json::Value) -> Result<Response, ClientError> {
        self.send("PUT", path, Some(json))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {}", t.expose()));
        let body = json.map(|j| j.to_string().into_bytes());
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        // The API refuses bodies that are not JSON (415); say so on every command, with or
        // without a body.
        if body.is_some() || method != "GET" {
            headers.push(("Content-Type", "application/json"));
        }
        self.raw(method, path, &headers, body.as_deref().unwrap_or_default())
    }

    /// One request with exactly these extra headers (no token added): for tests that
    /// present wrong credentials. A `Host` among them replaces the default (the address
    /// dialled).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let io = |error| ClientError::Io {
            addr: self.addr,
            error,
        };
        let mut stream = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        // A server may answer (401, 413) and close before reading the whole body: a failed
        // write is only an error if no answer can be read afterwards.
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.flush());
        let mut raw = Vec::new();
        let read = (&mut stream)
            .take(MAX_RESPONSE_BYTES as u64 + 64 * 1024)
            .read_to_end(&mut raw);
        match (parse_response(&raw), written, read) {
            (Ok(r), _, _) => Ok(r),
            (Err(_), Err(e), _) | (Err(_), Ok(()), Err(e)) => Err(io(e)),
            (Err(reason), Ok(()), Ok(_)) => Err(ClientError::Protocol {
                addr: self.addr,
                reason,
            }),
        }
    }
}

/// Parses a whole HTTP/1.1 response read until the server closed the connection.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unexpected status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unexpected status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let rest = &raw[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        rest.get(..len)
            .ok_or("body shorter than content-length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > MAX_RESPONSE_BYTES {
        return Err("response body too large".into());
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sized_chunked_and_close_delimited_bodies() {
        let r =
            parse_response(b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
                .expect("parses");
        assert_eq!((r.status, r.text().as_str()), (202, "hello"));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        )
        .expect("parses");
        assert_eq!(r.text(), "hello world");
        let r = parse_response(b"HTTP/1.0 401 Unauthorized\r\n\r\n").expect("parses");
        assert_eq!((r.status, r.body.len()), (401, 0));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn unspecified_listen_is_reached_through_loopback() {
        let c = AdminClient::new("0.0.0.0:8089".parse().expect("addr"), None);
        assert_eq!(c.addr().to_string(), "127.0.0.1:8089");
        let c = AdminClient::new("[::]:8089".parse().expect("addr"), None);
        assert_eq!(c.addr().to_string(), "[::1]:8089");
    }
}
