//! The control socket: a Unix socket (mode 0600, root's), one JSON request per line, one JSON response per
//! line. Requests go to the pipeline task, which owns the store and the kernel.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::ControlMsg;
use crate::control::{Request, Response};

/// Longest request line: a 100k-address blocklist is about 2 MB of JSON.
const MAX_REQUEST: usize = 4 << 20;
/// Connections served at once; more wait in the listen queue. With `MAX_REQUEST`, bounds what a local client
/// can make the daemon hold (32 x 4 MiB), however many connections it opens.
const MAX_CONNECTIONS: usize = 32;
/// A connection must send its whole request within this: an idle one is closed, not kept.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create its directory", dir.display()))?;
    }
    if path.exists() {
        // A daemon on other state may own it: only a socket nobody answers on is ours to replace.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{}: another floodgate daemon answers on this control socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("{}: cannot remove the stale socket", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("{}: cannot listen", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot set mode 0600", path.display()))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, to_pipeline: mpsc::Sender<ControlMsg>) {
    accept_capped(listener, MAX_CONNECTIONS, "control socket", move |stream| connection(stream, to_pipeline.clone()))
        .await
}

/// A listening socket the daemon serves: the control socket, the metrics listener.
pub trait Listener {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<tokio::net::TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves `listener` forever, each connection on a task of its own, at most `max` at once: a slot is taken
/// before accepting, so past the cap new connections wait in the kernel's queue instead of in memory.
pub async fn accept_capped<L, F, Fut>(listener: L, max: usize, what: &'static str, handle: F)
where
    L: Listener,
    F: Fn(L::Stream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        match listener.accept_one().await {
            Ok(stream) => {
                let served = handle(stream);
                tokio::spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, to_pipeline: mpsc::Sender<ControlMsg>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    let read = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::debug!("control connection idle for {REQUEST_TIMEOUT:?}; closed");
            return;
        }
    };
    let response = match read {
        Ok(0) => return,
        Ok(_) if !line.ends_with('\n') && line.len() >= MAX_REQUEST => {
            Response::error(&anyhow::anyhow!("request longer than {} MiB", MAX_REQUEST >> 20))
        }
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                if to_pipeline.send(ControlMsg { request, reply }).await.is_err() {
                    Response::error(&anyhow::anyhow!("floodgate is stopping"))
                } else {
                    answer.await.unwrap_or_else(|_| Response::error(&anyhow::anyhow!("floodgate is stopping")))
                }
            }
            Err(e) => Response::error(&anyhow::anyhow!("bad request: {e}")),
        },
        Err(e) => Response::error(&anyhow::anyhow!("reading the request: {e}")),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}
