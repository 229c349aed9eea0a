//! The metrics listener: plain HTTP/1.1, `GET /metrics` only, one response per connection. Bounded like the
//! control socket: a few connections at once, a small request head read within a deadline, so a scanner that
//! finds the port cannot make the daemon hold anything. The body comes from the pipeline (a `Metrics` request),
//! served between two batches.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::control::Request;
use crate::daemon::ControlMsg;

/// Connections served at once (Prometheus scrapes one at a time; a second is a person with curl).
const MAX_CONNECTIONS: usize = 4;
/// The request head must arrive whole within this, and fit in `MAX_HEAD`.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8192;

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("[metrics] listen = \"{addr}\": cannot listen"))
}

pub async fn serve(listener: TcpListener, to_pipeline: mpsc::Sender<ControlMsg>) {
    crate::daemon::server::accept_capped(listener, MAX_CONNECTIONS, "metrics listener", move |stream| {
        connection(stream, to_pipeline.clone())
    })
    .await
}

async fn connection(mut stream: TcpStream, to_pipeline: mpsc::Sender<ControlMsg>) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(h)) => h,
        _ => return,
    };
    let (status, body, kind) = match route(&head) {
        Route::Metrics { head_only } => match metrics(&to_pipeline).await {
            Ok(text) => {
                ("200 OK", if head_only { String::new() } else { text }, "text/plain; version=0.0.4; charset=utf-8")
            }
            Err(e) => ("503 Service Unavailable", format!("{e:#}\n"), "text/plain; charset=utf-8"),
        },
        Route::Index => ("200 OK", "floodgate: metrics at /metrics\n".into(), "text/plain; charset=utf-8"),
        Route::NotFound => ("404 Not Found", "not found: try /metrics\n".into(), "text/plain; charset=utf-8"),
        Route::BadMethod => ("405 Method Not Allowed", "GET only\n".into(), "text/plain; charset=utf-8"),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the end of the request head; None for a head too long, or a connection closed before it ended.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

#[derive(Debug, PartialEq)]
enum Route {
    Metrics { head_only: bool },
    Index,
    NotFound,
    BadMethod,
}

fn route(head: &str) -> Route {
    let mut it = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics { head_only: method == "HEAD" },
        ("GET" | "HEAD", "/") => Route::Index,
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

async fn metrics(to_pipeline: &mpsc::Sender<ControlMsg>) -> Result<String> {
    let (reply, answer) = oneshot::channel();
    to_pipeline
        .send(ControlMsg { request: Request::Metrics, reply })
        .await
        .map_err(|_| anyhow::anyhow!("floodgate is stopping"))?;
    let r = answer.await.map_err(|_| anyhow::anyhow!("floodgate is stopping"))?;
    if !r.ok {
        anyhow::bail!("{}", r.error);
    }
    Ok(r.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_of_metrics_is_served() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { head_only: false });
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics { head_only: false });
        assert_eq!(route("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { head_only: true });
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::Index);
        assert_eq!(route("GET /../etc/passwd HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(""), Route::BadMethod);
    }
}
