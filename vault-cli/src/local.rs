//! HTTP/1.1 over `pivault-server`'s local Unix-domain socket.
//!
//! One request per connection (`Connection: close`), so the answer ends at
//! end of stream unless it says its length; chunked answers are decoded.
//! Written out rather than pulled in: the client side of HTTP needed here
//! is a request line, four headers and a response parser, and the crates
//! that speak HTTP over Unix sockets would bring an async runtime into a
//! command that must start in milliseconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vault_core::secret::SecretString;

/// The most the server's answer may hold (a large record listing or export).
const MAX_ANSWER: u64 = 256 << 20;

/// Why a call failed: before the request reached the server (nothing was
/// done; safe to retry), or after (the server may have acted).
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made.
    Connect(std::io::Error),
    /// The request or its answer broke off.
    Exchange(std::io::Error),
}

/// One call: (status, content type, body).
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    auth: Option<&SecretString>,
    body: Option<(Vec<u8>, &str)>,
) -> Result<(u16, String, String), Failure> {
    check_socket_dir(socket).map_err(Failure::Connect)?;
    let stream = UnixStream::connect(socket).map_err(Failure::Connect)?;
    exchange(stream, method, path, auth, body).map_err(Failure::Exchange)
}

/// The client sends its password or token to whatever answers on the
/// socket path, so the path must be one only the server's side can create:
/// a directory that group or others may write (`/tmp`, even with its sticky
/// bit) would let any local user put a fake server there first and collect
/// staff passwords. Like ssh's `StrictModes`, such a socket is refused.
fn check_socket_dir(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "the socket's directory {} is writable by other users (mode {:04o}), so anyone \
                 could put a fake server there to collect passwords: refusing to connect. The \
                 custodian should use a directory only the service account can write, such as \
                 /run/pivault",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

fn exchange(
    mut stream: UnixStream,
    method: &str,
    path: &str,
    auth: Option<&SecretString>,
    body: Option<(Vec<u8>, &str)>,
) -> std::io::Result<(u16, String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some((b, ct)) = &body {
        head.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    } else if method != "GET" && method != "DELETE" {
        head.push_str("Content-Length: 0\r\n");
    }
    // The bearer token goes into its own buffer, wiped after the write;
    // sized up front so that no reallocation leaves a copy behind.
    let size = head.len()
        + auth.map_or(0, |a| a.expose().len() + 17)
        + 2
        + body.as_ref().map_or(0, |(b, _)| b.len());
    let mut request = zeroize::Zeroizing::new(Vec::with_capacity(size));
    request.extend_from_slice(head.as_bytes());
    if let Some(a) = auth {
        request.extend_from_slice(b"Authorization: ");
        request.extend_from_slice(a.expose().as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    if let Some((b, _)) = &body {
        request.extend_from_slice(b);
    }
    stream.write_all(&request)?;
    drop(request);
    read_response(BufReader::new(stream))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("malformed answer from the server ({what})"),
    )
}

/// Parses a status line, headers and a body (by length, chunked, or to the end).
fn read_response(mut r: impl BufRead) -> std::io::Result<(u16, String, String)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad("status line"))?;
    let (mut content_type, mut length, mut chunked) = (String::new(), None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').ok_or_else(|| bad("header"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.to_owned(),
            "content-length" => length = Some(value.parse::<u64>().map_err(|_| bad("length"))?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("chunk size"))?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > MAX_ANSWER {
                return Err(bad("too large"));
            }
            (&mut r).take(size).read_to_end(&mut body)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        if n > MAX_ANSWER {
            return Err(bad("too large"));
        }
        (&mut r).take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(bad("body cut short"));
        }
    } else {
        r.take(MAX_ANSWER).read_to_end(&mut body)?;
    }
    let text = String::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    Ok((status, content_type, text))
}

/// A failed connection, said so that a clerk knows what to do.
pub fn explain(socket: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let s = socket.display();
    match e.kind() {
        NotFound | ConnectionRefused => format!(
            "pivault-server is not running on {s}: staff reach the vault through it \
             (ask the vault's custodian to start it, or set PIVAULT_SOCKET to its socket). \
             Only the custodian opens the vault directory directly, with PIVAULT_PASSPHRASE_FILE"
        ),
        PermissionDenied if e.get_ref().is_some() => e.to_string(),
        PermissionDenied => format!(
            "you may not connect to {s} (permission denied): \
             ask the vault's custodian to add you to the socket's group"
        ),
        _ => format!("cannot talk to pivault-server on {s}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_chunked_and_close_delimited_answers() {
        let by_length = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}extra";
        let (st, ct, body) = read_response(&by_length[..]).unwrap();
        assert_eq!(
            (st, ct.as_str(), body.as_str()),
            (200, "application/json", "{\"a\":1}")
        );
        let chunked = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let (st, ct, body) = read_response(&chunked[..]).unwrap();
        assert_eq!(
            (st, ct.as_str(), body.as_str()),
            (404, "application/problem+json", "{\"a\":1}")
        );
        let to_end = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(read_response(&to_end[..]).unwrap().2, "hello");
        for broken in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(read_response(broken).is_err());
        }
    }
}
