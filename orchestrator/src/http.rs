//! The supervisor's HTTP server and the guard in front of every route.
//!
//! Server: hyper's HTTP/1.1 connection driver on each accepted loopback connection, with a
//! header-read timeout (a client that has not sent a whole request head within
//! [`HEADER_READ_TIMEOUT`] is disconnected; this also closes keep-alive connections idle for
//! that long) and a cap of [`MAX_CONNECTIONS`] open connections (the next accept waits for
//! a slot), so slow-header clients ("slowloris") cannot pile up descriptors. `axum::serve`
//! offers neither.
//!
//! Guard, checked before any handler, in this order:
//! 1. `Host` must name the supervisor itself: `127.0.0.1:PORT`, `localhost:PORT` or
//!    `[::1]:PORT`. A page served from an attacker's domain that re-resolves to 127.0.0.1
//!    (DNS rebinding) sends its own domain as `Host` and is refused, so it can read neither
//!    the dashboard (which embeds the token) nor any JSON.
//! 2. `Origin`, when present, must be `http://` + one of those: browsers send it on
//!    cross-origin requests, and a form or a `text/plain` fetch from another site needs no
//!    CORS preflight, so this refuses them even before the token check.
//! 3. Every method other than `GET`/`HEAD` changes state and needs the lab's token in
//!    [`TOKEN_HEADER`] (the dashboard page embeds it; the CLI and the runner read it from
//!    `supervisor.json`, which is 0600).
//!
//! Refusals are `403` (address or origin) or `401` (token) with a JSON `{"error": …}` that
//! says what was wrong; the handler never ran, so nothing changed.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// Header carrying the per-lab token on every state-changing request.
pub const TOKEN_HEADER: &str = "x-lightcone-token";

/// Time a client gets to send a request head (request line and headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections at most; the dashboard holds one per open page (its event stream),
/// the runner one per load thread.
pub const MAX_CONNECTIONS: usize = 512;

/// What the guard checks requests against.
#[derive(Debug, Clone)]
pub struct Guard {
    pub token: String,
    /// The port the supervisor listens on (loopback).
    pub port: u16,
}

impl Guard {
    /// The `host[:port]` forms that name this supervisor.
    fn own_hosts(&self) -> Vec<String> {
        let p = self.port;
        let mut v = vec![
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
        ];
        if p == 80 {
            v.extend(["127.0.0.1", "localhost", "[::1]"].map(String::from));
        }
        v
    }

    /// Why a request must be refused (status and message), or `None` to let it through.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Option<(StatusCode, String)> {
        let own = self.own_hosts();
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        match host {
            Some(h) if own.iter().any(|o| o.eq_ignore_ascii_case(h)) => {}
            _ => {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "Host {} is not this supervisor's address; use http://127.0.0.1:{}/ (requests under other names are refused, against DNS rebinding; a tunnel must keep port {} on both ends)",
                        host.map(|h| format!("{h:?}")).unwrap_or_else(|| "(missing)".into()),
                        self.port,
                        self.port
                    ),
                ))
            }
        }
        if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
            let o = origin.to_str().unwrap_or("");
            let same = o
                .strip_prefix("http://")
                .is_some_and(|h| own.iter().any(|x| x.eq_ignore_ascii_case(h)));
            if !same {
                return Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request from {o:?} refused: only pages served by this supervisor (http://127.0.0.1:{}) may call it",
                        self.port
                    ),
                ));
            }
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            let got = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
            if !got.is_some_and(|g| crate::dashboard::token_eq(g, &self.token)) {
                return Some((
                    StatusCode::UNAUTHORIZED,
                    format!("missing or wrong {TOKEN_HEADER} header: every {method} needs the lab's token (it is in the lab's supervisor.json)"),
                ));
            }
        }
        None
    }
}

/// axum middleware: [`Guard::check`] before any route.
pub async fn guard(
    axum::extract::State(g): axum::extract::State<Arc<Guard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match g.check(req.method(), req.headers()) {
        Some((status, error)) => {
            (status, Json(serde_json::json!({ "error": error }))).into_response()
        }
        None => next.run(req).await,
    }
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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn g() -> Guard {
        Guard {
            token: "t0k".into(),
            port: 4000,
        }
    }

    #[test]
    fn every_state_changing_request_needs_the_token() {
        let host = ("host", "127.0.0.1:4000");
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            // The routes that took no token before: kv writes and overlay sends.
            let (s, msg) = g().check(&m, &headers(&[host])).expect("refused");
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m}");
            assert!(msg.contains(TOKEN_HEADER), "{msg}");
            let wrong = g().check(&m, &headers(&[host, (TOKEN_HEADER, "t0x")]));
            assert_eq!(wrong.map(|r| r.0), Some(StatusCode::UNAUTHORIZED));
            assert_eq!(
                g().check(&m, &headers(&[host, (TOKEN_HEADER, "t0k")])),
                None
            );
        }
        assert_eq!(g().check(&Method::GET, &headers(&[host])), None);
        assert_eq!(g().check(&Method::HEAD, &headers(&[host])), None);
    }

    #[test]
    fn other_hosts_and_origins_are_refused() {
        let ok_token = (TOKEN_HEADER, "t0k");
        for h in [
            "127.0.0.1:4000",
            "localhost:4000",
            "LOCALHOST:4000",
            "[::1]:4000",
        ] {
            assert_eq!(
                g().check(&Method::GET, &headers(&[("host", h)])),
                None,
                "{h}"
            );
        }
        // DNS rebinding: the attacker's name, or the right address on another port.
        for h in [
            "evil.example:4000",
            "127.0.0.1:4001",
            "127.0.0.1",
            "0.0.0.0:4000",
        ] {
            let (s, msg) = g().check(&Method::GET, &headers(&[("host", h)])).expect(h);
            assert_eq!(s, StatusCode::FORBIDDEN);
            assert!(msg.contains("not this supervisor's address"), "{msg}");
        }
        let (s, _) = g().check(&Method::GET, &headers(&[])).expect("no Host");
        assert_eq!(s, StatusCode::FORBIDDEN);
        // A page of another origin: refused even with the right token and Host.
        for o in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:4000",
            "http://127.0.0.1:4001",
        ] {
            let r = g().check(
                &Method::POST,
                &headers(&[("host", "127.0.0.1:4000"), ("origin", o), ok_token]),
            );
            let (s, msg) = r.expect(o);
            assert_eq!(s, StatusCode::FORBIDDEN, "{o}");
            assert!(msg.contains("cross-origin"), "{msg}");
        }
        // The dashboard's own page.
        let own = headers(&[
            ("host", "127.0.0.1:4000"),
            ("origin", "http://127.0.0.1:4000"),
            ok_token,
        ]);
        assert_eq!(g().check(&Method::POST, &own), None);
        // Port 80: browsers leave the port out of Host.
        let g80 = Guard {
            token: "t".into(),
            port: 80,
        };
        assert_eq!(
            g80.check(&Method::GET, &headers(&[("host", "localhost")])),
            None
        );
    }

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
