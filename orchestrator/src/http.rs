//! The supervisor's HTTP server.
//!
//! Server: hyper's HTTP/1.1 connection driver on each accepted loopback connection, with a
//! header-read timeout (a client that has not sent a whole request head within
//! [`HEADER_READ_TIMEOUT`] is disconnected; this also closes keep-alive connections idle for
//! that long) and a cap of [`MAX_CONNECTIONS`] open connections (the next accept waits for
//! a slot), so slow-header clients ("slowloris") cannot pile up descriptors. `axum::serve`
//! offers neither.
//!
//! Also here, for the API and the dashboard alike: the token header's name and the one
//! error body every route answers with ([`ErrorReply`]). The guard in front of every
//! route (`Host`, `Origin`, token) belongs to the API: [`crate::api::Guard`].

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};

/// Header carrying the per-lab token on every state-changing request.
pub const TOKEN_HEADER: &str = "x-lightcone-token";

/// The header that stamps a state-changing request with the instant (UNIX ns on the
/// receiving host's clock) at which the supervisor is to apply it ([`crate::api::stamp`]).
pub const AT_HEADER: &str = "x-lightcone-at";

/// Time a client gets to send a request head (request line and headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections at most; the dashboard holds one per open page (its event stream),
/// the runner one per load thread.
pub const MAX_CONNECTIONS: usize = 512;

/// The body of every error answer, API's and dashboard's: `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// An error answer: `status` with an [`ErrorReply`].
pub fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorReply { error })).into_response()
}

/// Serve `app` on `listener` until the future is dropped: one task per connection, HTTP/1.1
/// with upgrades, [`HEADER_READ_TIMEOUT`] and at most `max_connections` open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
    max_connections: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the slot is released.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("http connection: {e}");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn server(timeout: Duration, max: usize) -> (tokio::runtime::Runtime, u16) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/", axum::routing::get(|| async { "hello" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    // A body that keeps streaming longer than the header timeout (as the
                    // dashboard's event stream does).
                    let s = futures::stream::unfold(0u32, |i| async move {
                        if i == 6 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Ok::<_, std::convert::Infallible>(format!("{i}")), i + 1))
                    });
                    axum::body::Body::from_stream(s)
                }),
            );
        rt.spawn(serve(listener, app, timeout, max));
        (rt, port)
    }

    /// Seconds until the server closes a connection that sent `sent` and then nothing.
    fn closed_after(port: u16, sent: &[u8], limit: Duration) -> Option<Duration> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(limit)).unwrap();
        c.write_all(sent).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(t.elapsed())
                }
                Err(_) => return None,
            }
        }
    }

    #[test]
    fn a_half_sent_header_is_cut_off_within_the_timeout() {
        let (_rt, port) = server(Duration::from_millis(300), 64);
        let half = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        let closed = closed_after(port, half, Duration::from_secs(5));
        assert!(
            closed.is_some_and(|d| d < Duration::from_millis(1500)),
            "slow-header connection still open after 5 s: {closed:?}"
        );
        // A complete request is still served, and a response streaming for longer than
        // the header timeout is not cut.
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains('5'), "stream cut short: {out}");
    }

    #[test]
    fn connections_beyond_the_cap_wait_for_a_slot() {
        let (_rt, port) = server(Duration::from_millis(400), 2);
        // Two slow clients take both slots; a third is served only once they are cut.
        let _a = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _b = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("hello"), "{out}");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "served before a slot was free: {:?}",
            t.elapsed()
        );
    }
}
