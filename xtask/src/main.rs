//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `run [--listen ADDR]`: install what is missing, build the page's wasm, start the relay.
//! - `test [STAGE...]`: install what is missing, then every test stage in order, stopping at the
//!   first failure, with a summary whose last line is `N passed, M failed`.
//! - `www`: only build the page: the wasm into `www/pkg/`, Hydrogen into `www/hydrogen/`.
//! - `fuzz [--minutes N]`: a long run of the coverage-guided fuzzer, keeping its corpus and
//!   every failure it finds (`fuzz/regressions/`).

mod cmd;
mod fuzz;
mod run;
mod test;
mod tools;
mod www;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  run [--listen ADDR]   build the page and serve it (default 127.0.0.1:8008)
  test [STAGE...]       install what is missing and run every test stage (or only the named ones)
  www                   build the page only (wasm into www/pkg/, Hydrogen into www/hydrogen/)
  fuzz [--minutes N]    run the fuzzer N minutes (default 10); keeps its corpus and failures
  help                  show this help

test stages: fmt, clippy, native, core-wasm, web-wasm, interop, e2e, fuzz";

/// Failures of xtask itself (a missing tool, a failed command).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{cmd}` failed: {status}")]
    Command { cmd: String, status: String },
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let result = match command.as_deref() {
        Some("run") => run::run(&rest),
        Some("test") => test::test(&rest),
        Some("fuzz") => fuzz::fuzz(&rest),
        Some("www") => tools::ensure_wasm_toolchain()
            .and_then(|()| www::build_release())
            .and_then(|()| www::build_hydrogen()),
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(Error::Other(format!("unknown command {other:?}\n{USAGE}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
