//! hearth-relay: the native half of Hearth.
//!
//! Today it serves the page (`www/`) with the headers a service-worker-hosted homeserver
//! needs, and reports its health. The WebSocket federation role (server authentication,
//! request forwarding, store-and-forward queues) will live in its own modules beside
//! [`static_files`], mounted on the same [`app`] router.

pub mod config;
pub mod health;
pub mod static_files;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub use crate::config::{Config, ConfigError};
use crate::static_files::StaticFiles;

/// What every request handler shares.
pub struct AppState {
    pub files: StaticFiles,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot use web root {path}: {source}")]
    WebRoot {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

impl AppState {
    pub fn new(config: &Config) -> Result<Arc<Self>, RelayError> {
        let files = StaticFiles::new(&config.www).map_err(|source| RelayError::WebRoot {
            path: config.www.display().to_string(),
            source,
        })?;
        Ok(Arc::new(Self { files }))
    }
}

/// The relay's HTTP routes.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .fallback(static_files::serve)
        .with_state(state)
}

/// Binds the configured address. Port 0 picks a free port; read it back from the listener.
pub async fn bind(config: &Config) -> Result<TcpListener, RelayError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| RelayError::Listen {
            addr: config.listen.to_string(),
            source,
        })
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RelayError> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(RelayError::Serve)
}
