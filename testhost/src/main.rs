//! `hearth-testhost`: a native host for `hearth-core` on in-memory storage, for interop tests
//! with real clients, federation tests with real peers, and benchmarks.
//!
//! ```text
//! hearth-testhost [--listen 127.0.0.1:8448] [--server-name NAME]
//!                 [--federation-listen ADDR:PORT [--tls-cert PEM --tls-key PEM]]
//!                 [--federation-insecure-tls]
//! ```
//!
//! `--listen` serves the whole API over plain HTTP (clients; open registration). Without
//! `--server-name` the server is key-named (its name is the hex of its key); with it, it is a
//! named server (`127.0.0.1:8448`, `example.org`). `--federation-listen` serves the federation
//! and key APIs over HTTPS, with a self-signed certificate made at start unless `--tls-cert`
//! and `--tls-key` are given. A server name whose port is 0 takes the federation listener's
//! port. `--federation-insecure-tls` accepts any certificate from peers: tests only.
//!
//! The first line on stdout is machine-readable:
//! `hearth-testhost listening on http://127.0.0.1:8448 server_name=<name>`, followed by
//! ` federation=https://<addr>` when federation is served. Port 0 picks a free port; the line
//! tells which.

mod https;
mod relay;
mod resolve;
mod serve;
mod tls;
mod world;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use hearth_core::federation::transport::Transport;
use hearth_core::storage::MemoryStorage;
use hearth_core::{Config, Homeserver};
use ruma::{OwnedServerName, ServerName};
use tokio::net::TcpListener;
use tokio::task::LocalSet;
use tokio_rustls::TlsAcceptor;

use crate::serve::Scope;

const USAGE: &str = "usage: hearth-testhost [--listen ADDR:PORT] [--server-name NAME] \
[--federation-listen ADDR:PORT [--tls-cert PEM --tls-key PEM]] [--federation-insecure-tls] [--relay URL]
  --listen                   plain HTTP for clients (default 127.0.0.1:8448; port 0 picks a free port)
  --server-name              a named server (DNS name or IP literal, optional port; port 0 takes
                             the federation listener's); without it the name is the key's hex
  --federation-listen        serve the federation and key APIs over HTTPS there
  --tls-cert, --tls-key      the federation listener's certificate chain and key (PEM); without
                             them a self-signed certificate is made at start
  --federation-insecure-tls  accept any certificate from peers (tests only)
  --relay                    federate through the Hearth relay at URL (http://host:port), as a
                             browser server does: a key-named server only";

/// How long a TLS handshake on the federation port may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    server_name: Option<OwnedServerName>,
    federation_listen: Option<SocketAddr>,
    tls_files: Option<(PathBuf, PathBuf)>,
    insecure_tls: bool,
    relay: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, HostError> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8448));
    let mut server_name = None;
    let mut federation_listen = None;
    let (mut cert, mut key) = (None, None);
    let mut insecure_tls = false;
    let mut relay = None;
    let addr = |flag: &str, v: Option<String>| -> Result<SocketAddr, HostError> {
        let v = v.ok_or_else(|| HostError::Usage(format!("{flag} needs ADDR:PORT")))?;
        v.parse()
            .map_err(|e| HostError::Usage(format!("bad {flag} address {v:?}: {e}")))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = addr("--listen", args.next())?,
            "--federation-listen" => {
                federation_listen = Some(addr("--federation-listen", args.next())?);
            }
            "--server-name" => {
                let v = args
                    .next()
                    .ok_or_else(|| HostError::Usage("--server-name needs a NAME".into()))?;
                let name = ServerName::parse(&v)
                    .map_err(|e| HostError::Usage(format!("bad --server-name {v:?}: {e}")))?;
                server_name = Some(name);
            }
            "--tls-cert" => {
                cert = Some(PathBuf::from(args.next().ok_or_else(|| {
                    HostError::Usage("--tls-cert needs a PEM file".into())
                })?));
            }
            "--tls-key" => {
                key = Some(PathBuf::from(args.next().ok_or_else(|| {
                    HostError::Usage("--tls-key needs a PEM file".into())
                })?));
            }
            "--federation-insecure-tls" => insecure_tls = true,
            "--relay" => {
                relay = Some(
                    args.next()
                        .ok_or_else(|| HostError::Usage("--relay needs a URL".into()))?,
                );
            }
            "-h" | "--help" => return Err(HostError::Usage("help".into())),
            other => return Err(HostError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let tls_files = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(HostError::Usage(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
    };
    if tls_files.is_some() && federation_listen.is_none() {
        return Err(HostError::Usage(
            "--tls-cert and --tls-key need --federation-listen".into(),
        ));
    }
    if server_name.as_ref().is_some_and(|n| n.port() == Some(0)) && federation_listen.is_none() {
        return Err(HostError::Usage(
            "a server name with port 0 takes the port of --federation-listen, which is missing"
                .into(),
        ));
    }
    if relay.is_some() && (server_name.is_some() || federation_listen.is_some()) {
        return Err(HostError::Usage(
            "--relay is for a key-named server: without --server-name and --federation-listen"
                .into(),
        ));
    }
    Ok(Args {
        listen,
        server_name,
        federation_listen,
        tls_files,
        insecure_tls,
        relay,
    })
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(hearth_core::logging::DEFAULT_DIRECTIVES)
            }),
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
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let federation = match args.federation_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let federation_addr = federation
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let server_name = match (&args.server_name, federation_addr) {
        (Some(name), Some(fed)) if name.port() == Some(0) => Some(
            ServerName::parse(format!("{}:{}", name.host(), fed.port()))
                .map_err(|e| HostError::Usage(format!("server name with the bound port: {e}")))?,
        ),
        (name, _) => name.clone(),
    };
    // Even a key-named server without a federation listener can ask named servers: they
    // verify its requests from its name.
    let relayed = args
        .relay
        .as_ref()
        .map(|_| relay::RelayTransport::default());
    let transport: Rc<dyn Transport> = match &relayed {
        Some(r) => Rc::new(r.clone()),
        None => Rc::new(https::HttpsTransport::new(tls::client_config(
            args.insecure_tls,
        )?)),
    };
    let config = Config {
        server_name,
        ..Config::default()
    };
    let hs = Homeserver::with_transport(
        Rc::new(MemoryStorage::new()),
        Rc::new(world::HostWorld),
        transport,
        config,
    )
    .await?;
    let acceptor = match &federation {
        Some(listener) => {
            let mut names = vec![
                "localhost".to_owned(),
                listener.local_addr()?.ip().to_string(),
            ];
            let host = hs.server_name().host();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            // A key-named server's 64-digit name is no DNS name a certificate could carry.
            if hearth_core::keys::key_from_name(hs.server_name()).is_none() {
                names.push(host.to_owned());
            }
            names.dedup();
            let files = args
                .tls_files
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path()));
            Some(TlsAcceptor::from(tls::server_config(files, names)?))
        }
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        write!(
            out,
            "hearth-testhost listening on http://{addr} server_name={}",
            hs.server_name()
        )?;
        if let Some(fed) = federation_addr {
            write!(out, " federation=https://{fed}")?;
        }
        writeln!(out)?;
        out.flush()?;
    }
    if let (Some(r), Some(url)) = (relayed, args.relay.clone()) {
        tokio::task::spawn_local(relay::run(hs.clone(), r, url));
        tokio::task::spawn_local(hearth_core::federation::outbox::run(hs.clone()));
    }
    if let (Some(listener), Some(acceptor)) = (federation, acceptor) {
        tokio::task::spawn_local(serve_federation(hs.clone(), listener, acceptor));
        // The outbound queue: transactions to other servers, retried until they answer.
        tokio::task::spawn_local(hearth_core::federation::outbox::run(hs.clone()));
    }
    // The search index follows the timeline once writes are quiet.
    tokio::task::spawn_local(hearth_core::room::indexer::run(hs.clone()));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small requests dominate (sends, syncs): do not wait to coalesce packets.
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(serve::connection(hs.clone(), stream, Some(peer), Scope::All));
                }
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, HostError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HostError::Listen { addr, source })
}

/// The HTTPS federation listener: each connection's TLS handshake, then the federation and key
/// APIs on it.
async fn serve_federation(hs: Homeserver, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (hs, acceptor) = (hs.clone(), acceptor.clone());
                tokio::task::spawn_local(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve::connection(hs, tls, Some(peer), Scope::Federation).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "federation accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
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
        assert!(matches!(
            args(&["--server-name", "not a name"]),
            Err(HostError::Usage(_))
        ));
        assert!(matches!(
            args(&["--tls-cert", "c.pem", "--federation-listen", "127.0.0.1:0"]),
            Err(HostError::Usage(_))
        ));
        assert!(matches!(
            args(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]),
            Err(HostError::Usage(_))
        ));
        assert!(matches!(
            args(&["--server-name", "127.0.0.1:0"]),
            Err(HostError::Usage(_))
        ));
    }

    #[test]
    fn federation_flags_are_read() {
        let a = args(&[
            "--server-name",
            "127.0.0.1:0",
            "--federation-listen",
            "127.0.0.1:0",
            "--federation-insecure-tls",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .map_err(|e| e.to_string());
        let a = a.as_ref().map(|a| {
            (
                a.server_name.as_ref().map(|n| n.to_string()),
                a.federation_listen.map(|f| f.to_string()),
                a.insecure_tls,
                a.tls_files.is_some(),
            )
        });
        assert_eq!(
            a,
            Ok((
                Some("127.0.0.1:0".to_owned()),
                Some("127.0.0.1:0".to_owned()),
                true,
                true
            ))
        );
    }
}
