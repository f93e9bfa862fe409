//! Plain HTTP/1.1 requests without a body, enough for the agents' and the operator's /status,
//! /metrics, probes and test endpoints: blocking ([`get`]) for synchronous tests, async
//! ([`request`], [`get_async`]) for tokio ones; one request text, one response parser.
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long an async request may take, connection included.
const ASYNC_TIMEOUT: Duration = Duration::from_secs(10);

fn request_text(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// A whole response: `(status code, body)`.
pub fn parse_response(response: &str) -> Option<(u16, String)> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A blocking GET (connecting for at most 500 ms, reading for at most 5 s): `(status code,
/// body)`, or None if there was no well-formed answer.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request_text("GET", path).as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    parse_response(&response)
}

/// An async request to `host:port`: the raw response, head included (at most 10 s).
pub async fn request(host: &str, port: u16, method: &str, path: &str) -> io::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(request_text(method, path).as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(ASYNC_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{method} {path} timed out")))?
}

/// An async GET: `(status code, body)`.
pub async fn get_async(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let response = request(&addr.ip().to_string(), addr.port(), "GET", path).await?;
    parse_response(&response).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("GET {path}: no HTTP response"),
        )
    })
}

/// A TCP port on 127.0.0.1 the kernel says is free now.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_split_into_its_code_and_body() {
        assert_eq!(
            parse_response("HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno"),
            Some((404, "no".to_owned()))
        );
        assert_eq!(parse_response("HTTP/1.1 200 OK"), None);
    }

    #[tokio::test]
    async fn both_clients_read_what_a_server_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let read = stream.read(&mut request).unwrap();
                let line = String::from_utf8_lossy(&request[..read])
                    .lines()
                    .next()
                    .unwrap()
                    .to_owned();
                write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{line}").unwrap();
            }
        });
        assert_eq!(
            get_async(addr, "/status").await.unwrap(),
            (200, "GET /status HTTP/1.1".to_owned())
        );
        let blocking = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
            .await
            .unwrap();
        assert_eq!(blocking, Some((200, "GET /metrics HTTP/1.1".to_owned())));
        server.join().unwrap();
    }
}
