//! `hearth-bench`: a load client for a running `hearth-testhost`.
//!
//! ```text
//! hearth-bench --url http://127.0.0.1:8448 [--reps 3] [--sequential 2000] [--warmup 200]
//!              [--users 8] [--per-user 250] [--samples 300]
//! ```
//!
//! Measures (a) sequential `PUT /send` throughput of one user, (b) total throughput of several
//! users sending into their own rooms at once, (c) delivery latency from a send to the other
//! user's waiting `/sync`. Prints the median over the repetitions and each repetition's figure.

mod client;
mod scenarios;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::task::LocalSet;

use crate::scenarios::{Pair, Sender};
use crate::stats::median;

const USAGE: &str = "usage: hearth-bench --url http://HOST:PORT [--reps N] [--sequential N] [--warmup N] [--users N] [--per-user N] [--samples N]";

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, PartialEq)]
struct Args {
    addr: SocketAddr,
    reps: usize,
    sequential: usize,
    warmup: usize,
    users: usize,
    per_user: usize,
    samples: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, BenchError> {
    let mut url = None;
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8448)),
        reps: 3,
        sequential: 2000,
        warmup: 200,
        users: 8,
        per_user: 250,
        samples: 300,
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value")))
        };
        let number = |v: String| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| BenchError::Usage(format!("{flag}: {v:?} is not a positive number")))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--reps" => a.reps = number(value()?)?,
            "--sequential" => a.sequential = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            "--users" => a.users = number(value()?)?,
            "--per-user" => a.per_user = number(value()?)?,
            "--samples" => a.samples = number(value()?)?,
            "-h" | "--help" => return Err(BenchError::Usage("help".into())),
            other => return Err(BenchError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let url = url.ok_or_else(|| BenchError::Usage("--url is required".into()))?;
    let hostport = url
        .strip_prefix("http://")
        .unwrap_or(&url)
        .trim_end_matches('/');
    a.addr = hostport
        .parse()
        .map_err(|e| BenchError::Usage(format!("--url {url:?}: need http://IP:PORT ({e})")))?;
    Ok(a)
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(|args| {
        // One thread: the other core is the server's.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        LocalSet::new().block_on(&rt, run(args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(a: Args) -> Result<(), BenchError> {
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    eprintln!("hearth-bench: setting up users and rooms on {}", a.addr);
    let mut seq = Sender::new(a.addr, &format!("b{tag}seq")).await?;
    let mut senders = Vec::new();
    for i in 0..a.users {
        senders.push(Sender::new(a.addr, &format!("b{tag}c{i}")).await?);
    }
    let mut pair = Pair::new(a.addr, &format!("b{tag}l")).await?;

    let (mut seq_rates, mut conc_rates, mut p50s, mut p99s) = (vec![], vec![], vec![], vec![]);
    for rep in 0..a.reps {
        eprintln!("hearth-bench: repetition {}/{}", rep + 1, a.reps);
        seq_rates.push(scenarios::sequential(&mut seq, rep, a.warmup, a.sequential).await?);
        let (rate, back) = scenarios::concurrent(senders, rep, a.warmup / 10, a.per_user).await?;
        senders = back;
        conc_rates.push(rate);
        let lat = scenarios::delivery(&mut pair, rep, a.samples).await?;
        p50s.push(lat.p50_ms);
        p99s.push(lat.p99_ms);
    }

    println!(
        "hearth-bench against http://{} — median of {} repetitions [each repetition]",
        a.addr, a.reps
    );
    let rows = [
        (
            format!("sequential sends, 1 user, N={}", a.sequential),
            &seq_rates,
            "ev/s",
            "target >= 5,000 ev/s",
        ),
        (
            format!("concurrent sends, {} users x {}", a.users, a.per_user),
            &conc_rates,
            "ev/s",
            "",
        ),
        (
            format!("delivery latency p50, {} samples", a.samples),
            &p50s,
            "ms",
            "target < 2 ms",
        ),
        (
            format!("delivery latency p99, {} samples", a.samples),
            &p99s,
            "ms",
            "",
        ),
    ];
    println!(
        "{:<40} {:>12}  {:<32} note",
        "measurement", "median", "repetitions"
    );
    for (name, values, unit, note) in rows {
        let fmt = |v: f64| {
            if unit == "ms" {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        };
        let each: Vec<String> = values.iter().map(|v| fmt(*v)).collect();
        let med = median(values).map(fmt).unwrap_or_else(|| "-".into());
        let each = format!("[{}]", each.join(" "));
        println!("{name:<40} {med:>7} {unit:<4}  {each:<32} {note}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Args, BenchError> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn url_and_counts_are_parsed() {
        let a = parse(&[
            "--url",
            "http://127.0.0.1:9000/",
            "--reps",
            "5",
            "--samples",
            "10",
        ])
        .map_err(|e| e.to_string());
        let a = a
            .as_ref()
            .map(|a| (a.addr.to_string(), a.reps, a.samples, a.sequential));
        assert_eq!(a, Ok(("127.0.0.1:9000".to_owned(), 5, 10, 2000)));
    }

    #[test]
    fn missing_url_zero_counts_and_unknown_flags_are_refused() {
        assert!(matches!(parse(&[]), Err(BenchError::Usage(_))));
        assert!(matches!(
            parse(&["--url", "http://127.0.0.1:1", "--reps", "0"]),
            Err(BenchError::Usage(_))
        ));
        assert!(matches!(
            parse(&["--url", "http://127.0.0.1:1", "--reps"]),
            Err(BenchError::Usage(_))
        ));
        assert!(matches!(
            parse(&["--url", "http://example.org"]),
            Err(BenchError::Usage(_))
        ));
        assert!(matches!(
            parse(&["--url", "http://127.0.0.1:1", "--fast"]),
            Err(BenchError::Usage(_))
        ));
    }
}
