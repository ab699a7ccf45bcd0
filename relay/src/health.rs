//! `/healthz`: liveness for process supervisors and test harnesses.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

pub async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "{\"status\":\"ok\"}",
    )
}
