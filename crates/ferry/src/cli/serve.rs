//! The HTTP endpoints of `--metrics-addr` (Prometheus text at `/metrics`) and `--status-addr` (the status
//! snapshot as JSON at `/status` and `/`). A few lines of HTTP/1.1 on tokio: one request per connection.

use std::sync::Arc;

use ferry::{Error, JobHandle};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What an endpoint answers.
#[derive(Clone)]
pub enum Content {
    /// Prometheus metrics.
    Metrics(PrometheusHandle),
    /// The job's status as JSON.
    Status(JobHandle),
}

/// Binds `addr` and answers requests in the background; returns the bound address.
pub async fn serve(addr: &str, content: Content) -> Result<std::net::SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::config(format!("cannot listen on {addr}: {e}")))?;
    let content = Arc::new(content);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let content = content.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read until the end of the request head (or the buffer is full).
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(m) => n += m,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (code, ctype, body) = respond(&content, path);
                let reply = format!(
                    "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(local)
}

fn respond(content: &Content, path: &str) -> (&'static str, &'static str, String) {
    match (content, path) {
        (Content::Metrics(h), "/metrics" | "/") => {
            ("200 OK", "text/plain; version=0.0.4", h.render())
        }
        (Content::Status(job), "/status" | "/") => (
            "200 OK",
            "application/json",
            serde_json::to_string(&job.status()).unwrap_or_else(|_| "{}".into()),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}
