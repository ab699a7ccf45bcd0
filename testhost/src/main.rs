//! `hearth-testhost`: a native host for `hearth-core` on in-memory storage, for interop tests
//! with real clients and for benchmarks.
//!
//! ```text
//! hearth-testhost [--listen 127.0.0.1:8448]
//! ```
//!
//! The first line on stdout is machine-readable:
//! `hearth-testhost listening on http://127.0.0.1:8448 server_name=<64 hex>`.
//! Port 0 picks a free port; the line tells which.

mod serve;
mod world;

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;

use hearth_core::storage::MemoryStorage;
use hearth_core::{Config, Homeserver};
use tokio::net::TcpListener;
use tokio::task::LocalSet;

const USAGE: &str = "usage: hearth-testhost [--listen ADDR:PORT]   (default 127.0.0.1:8448; port 0 picks a free port)";

#[derive(Debug, thiserror::Error)]
enum HostError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the homeserver did not start: {0}")]
    Start(#[from] hearth_core::StartError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

struct Args {
    listen: SocketAddr,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, HostError> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8448));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args
                    .next()
                    .ok_or_else(|| HostError::Usage("--listen needs ADDR:PORT".into()))?;
                listen = v
                    .parse()
                    .map_err(|e| HostError::Usage(format!("bad --listen address {v:?}: {e}")))?;
            }
            "-h" | "--help" => return Err(HostError::Usage("help".into())),
            other => return Err(HostError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Args { listen })
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = parse_args(std::env::args().skip(1)).and_then(|args| {
        // The core is single-threaded (`Rc`, no `Send`): one thread, every connection a local task.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        LocalSet::new().block_on(&rt, run(args))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-testhost: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), HostError> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| HostError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let hs = Homeserver::new(
        Rc::new(MemoryStorage::new()),
        Rc::new(world::HostWorld),
        Config::default(),
    )
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "hearth-testhost listening on http://{addr} server_name={}",
            hs.server_name()
        )?;
        out.flush()?;
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small requests dominate (sends, syncs): do not wait to coalesce packets.
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(serve::connection(hs.clone(), stream));
                }
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, HostError> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn listen_defaults_to_loopback_8448() {
        let a = args(&[]).map_err(|e| e.to_string());
        assert_eq!(
            a.map(|a| a.listen.to_string()),
            Ok("127.0.0.1:8448".to_owned())
        );
    }

    #[test]
    fn listen_flag_sets_address() {
        let a = args(&["--listen", "127.0.0.1:0"]).map_err(|e| e.to_string());
        assert_eq!(
            a.map(|a| a.listen.to_string()),
            Ok("127.0.0.1:0".to_owned())
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(matches!(args(&["--listen"]), Err(HostError::Usage(_))));
        assert!(matches!(
            args(&["--listen", "nonsense"]),
            Err(HostError::Usage(_))
        ));
        assert!(matches!(
            args(&["--password-hash-memory-kib", "8"]),
            Err(HostError::Usage(_))
        ));
    }
}
