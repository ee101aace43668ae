//! The dashboard served by the supervisor on loopback. This first version is one page that
//! polls `/api/status`; the full topology view with live updates builds on it.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("../../dashboards/index.html");

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}
