//! `cargo xtask run`: build the page and serve it with the relay.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::{Error, Result, cmd, root, tools, www};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8008";

/// Parses `[--listen ADDR]`.
pub fn parse_listen(args: &[String]) -> Result<SocketAddr> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--listen=") {
            listen = v.to_owned();
        } else if a == "--listen" {
            listen = it
                .next()
                .ok_or_else(|| Error::Other("--listen needs an address".into()))?
                .clone();
        } else {
            return Err(Error::Other(format!(
                "unknown argument {a:?} (usage: cargo xtask run [--listen ADDR])"
            )));
        }
    }
    listen.parse().map_err(|_| {
        Error::Other(format!(
            "invalid listen address {listen:?}: expected IP:PORT"
        ))
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let listen = parse_listen(args)?;
    tools::ensure_wasm_toolchain()?;
    let npm = cmd::on_path("npm") && cmd::on_path("node");
    if npm {
        // Brings npm's wasm-opt for a smaller wasm; the page works without it.
        tools::ensure_npm_package(&root().join("tests/e2e"))?;
    }
    www::build_release()?;
    // Hydrogen is a second client beside the page: serve the page even when it cannot be built.
    let hydrogen = if npm {
        www::build_hydrogen()
            .inspect_err(|e| println!("xtask: serving without Hydrogen (/hydrogen/): {e}"))
            .is_ok()
    } else {
        println!("xtask: npm or node not found; serving without Hydrogen (/hydrogen/)");
        false
    };
    cmd::run(&mut cmd::new(
        "cargo",
        &["build", "-p", "hearth-relay"],
        &root(),
    ))?;

    let relay = www::target_dir().join("debug/hearth-relay");
    let mut child = Command::new(&relay)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--www")
        .arg(root().join("www"))
        // Transactions for servers whose tab is closed wait here across runs.
        .arg("--data")
        .arg(www::target_dir().join("relay-data"))
        // The relay ends when this pipe closes, i.e. when we do, however we are stopped
        // (Ctrl-C reaches both of us; a SIGTERM or SIGKILL only reaches us).
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: relay.display().to_string(),
            source,
        })?;
    // Held, not left in `child`: `Child::wait` would close it before waiting.
    let _relay_lives_while_we_do = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Other("relay stdout unavailable".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    match first.strip_prefix("hearth-relay listening on ") {
        Some(url) => {
            println!("\n  Hearth is running. Open {url}/ in Chromium, Firefox or Safari.");
            if hydrogen {
                println!("  Hydrogen on the same server: {url}/hydrogen/");
            }
            if !listen.ip().is_loopback() {
                println!(
                    "  Note: service workers need a secure context; over plain HTTP only localhost/127.0.0.1 qualify."
                );
            }
            println!("  Stop with Ctrl-C.\n");
        }
        None => println!("{first}"),
    }
    // Keep forwarding the relay's stdout after the banner.
    std::thread::spawn(move || {
        for line in lines.map_while(std::result::Result::ok) {
            println!("{line}");
        }
    });
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            cmd: relay.display().to_string(),
            status: status.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listen_defaults_and_both_spellings_parse() {
        assert_eq!(parse_listen(&[]).unwrap().to_string(), DEFAULT_LISTEN);
        assert_eq!(
            parse_listen(&args(&["--listen", "127.0.0.1:9"]))
                .unwrap()
                .to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(
            parse_listen(&args(&["--listen=[::1]:80"]))
                .unwrap()
                .to_string(),
            "[::1]:80"
        );
    }

    #[test]
    fn bad_listen_arguments_are_refused() {
        assert!(parse_listen(&args(&["--listen"])).is_err());
        assert!(parse_listen(&args(&["--listen", "localhost"])).is_err());
        assert!(parse_listen(&args(&["--port", "1"])).is_err());
    }
}
