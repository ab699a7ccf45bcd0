//! hearth-relay: the native half of Hearth.
//!
//! It serves the page (`www/`) with the headers a service-worker-hosted homeserver needs, and
//! carries federation between servers: each connects to `/_hearth/relay` over WebSocket,
//! proves that its name is its key ([`connection`]), and sends and answers Server-Server API
//! requests by destination ([`hub`]). Transactions for a server that is not connected wait in
//! a durable queue ([`queue`]). The wire protocol is the `hearth-relay-proto` crate,
//! described in `docs/relay-protocol.md`.

pub mod config;
pub mod connection;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod queue;
pub mod ratelimit;
pub mod static_files;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use hearth_relay_proto::answer::SOCKET_PATH;
use hearth_relay_proto::auth;
use tokio::net::TcpListener;

pub use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::queue::{QueueLimits, QueueStore};
use crate::static_files::StaticFiles;

/// How long shutdown waits for connections to close and stored transactions to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every request handler shares.
pub struct AppState {
    pub files: StaticFiles,
    pub hub: Arc<Hub>,
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
    #[error("invalid --origin {0:?}: {1}")]
    Origin(String, auth::OriginError),
    #[error("cannot open the queue: {0}")]
    Queue(#[from] queue::QueueError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

impl AppState {
    /// Opens the web root and the queue store (`--data`, or memory).
    pub fn new(config: &Config) -> Result<Arc<Self>, RelayError> {
        let files = StaticFiles::new(&config.www).map_err(|source| RelayError::WebRoot {
            path: config.www.display().to_string(),
            source,
        })?;
        let origins = config
            .origins
            .iter()
            .map(|o| auth::normalize_origin(o).map_err(|e| RelayError::Origin(o.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let l = &config.limits;
        let (store, queued) = QueueStore::open(
            config.data.as_deref(),
            QueueLimits {
                max_count: l.queue_max_count,
                max_bytes: l.queue_max_bytes,
                max_total_bytes: l.queue_max_total_bytes,
            },
        )?;
        let hub = Arc::new(Hub::new(l.clone(), origins, store, queued));
        Ok(Arc::new(Self { files, hub }))
    }
}

/// The relay's HTTP routes.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics_text))
        .route(SOCKET_PATH, get(connection::upgrade))
        .fallback(static_files::serve)
        .with_state(state)
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let hub = &state.hub;
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        hub.metrics.render(&hub.store.gauges()),
    )
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

/// Serves until `shutdown` resolves. Then it stops accepting, closes every server's socket
/// (answers already queued for it go out first), waits for stored transactions to be
/// written, and closes the queue store: nothing it acknowledged is lost.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RelayError> {
    let local = listener.local_addr().map_err(RelayError::Serve)?;
    state.hub.start(local);
    let hub = state.hub.clone();
    let signal = async move {
        shutdown.await;
        hub.begin_shutdown();
    };
    // Without TCP_NODELAY a small answer can wait for the peer's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let served = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(signal)
        .await
        .map_err(RelayError::Serve);
    state.hub.finish(SHUTDOWN_GRACE).await;
    served
}
