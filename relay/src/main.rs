use std::process::ExitCode;

use hearth_relay::{AppState, Config, ConfigError};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(ConfigError::Help(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hearth-relay: {e}\n{}", Config::usage());
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), hearth_relay::RelayError> {
    let state = AppState::new(&config)?;
    let listener = hearth_relay::bind(&config).await?;
    let addr = listener
        .local_addr()
        .map_err(hearth_relay::RelayError::Serve)?;
    // Harnesses that ask for port 0 read the real address from this line.
    println!("hearth-relay listening on http://{addr}");
    match &config.data {
        Some(dir) => {
            tracing::info!(%addr, www = %config.www.display(), data = %dir.display(), "serving")
        }
        None => tracing::warn!(
            %addr,
            www = %config.www.display(),
            "serving; the store-and-forward queue is in memory and will not survive a restart (pass --data DIR)"
        ),
    }
    hearth_relay::serve(listener, state, shutdown_signal(config.exit_with_stdin)).await
}

/// Resolves when standard input reaches its end (or fails): the parent holding the other end
/// of the pipe is gone.
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    tracing::info!("standard input closed");
}

async fn shutdown_signal(exit_with_stdin: bool) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for ctrl-c: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let parent_gone = async {
        if exit_with_stdin {
            stdin_closed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = parent_gone => {},
    }
    tracing::info!("shutting down");
}
