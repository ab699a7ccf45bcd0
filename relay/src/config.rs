//! Command-line configuration (clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8008";

/// Hearth's relay: serves the page and carries federation between servers that prove their
/// key-derived names over a WebSocket (`/_hearth/relay`).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "hearth-relay", disable_version_flag = true)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory with the page to serve.
    #[arg(long, value_name = "DIR", default_value = "www")]
    pub www: PathBuf,

    /// Shut down when standard input closes: a parent that gives the relay a pipe takes it
    /// down with it, however the parent ends.
    #[arg(long)]
    pub exit_with_stdin: bool,

    /// Directory of the store-and-forward queue (`queue.redb`, created if missing). Without
    /// it the queue lives in memory and does not survive a restart.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// An origin servers may sign for when they connect (`https://relay.example.org`),
    /// repeatable. Default: `http://` plus the listening address, and for a loopback or
    /// unspecified address also `http://localhost:PORT` and `http://127.0.0.1:PORT`.
    #[arg(long = "origin", value_name = "URL")]
    pub origins: Vec<String>,

    #[command(flatten)]
    pub limits: Limits,
}

/// Bounds that protect the relay and its other users from one connection or destination.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Limits {
    /// Largest WebSocket message accepted from a server, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_frame_bytes: usize,

    /// Most transactions queued for one absent destination.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub queue_max_count: u64,

    /// Most bytes queued for one absent destination.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub queue_max_bytes: u64,

    /// Most bytes queued for all destinations together.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub queue_max_total_bytes: u64,

    /// Stored transactions sent to a returning server before the first is answered (1: one
    /// round trip each). A Hearth server checks and prepares the next ones while it commits
    /// the previous one, and applies them in the order they came. Four keep one ready to go
    /// when a commit ends and the next one's lookups issued before it began.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub delivery_window: u16,

    /// How long a forwarded request may wait for its answer (`60s`, `500ms`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How often the relay pings each connection.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A connection from which nothing (not even a pong) arrives for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Time a new connection has to prove its name.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// Frames per second one connection may send on average (bursts of twice as many).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub rate_frames: u32,

    /// Bytes per second one connection may send on average (bursts of twice as many, and
    /// always at least one largest frame).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub rate_bytes: u64,

    /// Bytes waiting to be written to one connection before it counts as a slow reader and
    /// is closed.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub outbound_max_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `-h`/`--help`; holds the help text.
    #[error("help requested")]
    Help(String),
    /// Anything clap refused; holds its one-line message.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses arguments (without the program name). Accepts `--flag value` and `--flag=value`.
    pub fn from_args<I, S>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv =
            std::iter::once("hearth-relay".to_owned()).chain(args.into_iter().map(Into::into));
        let matches = Self::command().try_get_matches_from(argv).map_err(|e| {
            if e.kind() == clap::error::ErrorKind::DisplayHelp {
                ConfigError::Help(e.render().to_string())
            } else {
                ConfigError::Invalid(first_line(&e.render().to_string()))
            }
        })?;
        Self::from_arg_matches(&matches)
            .map_err(|e| ConfigError::Invalid(first_line(&e.render().to_string())))
    }

    /// One line for error messages: `usage: hearth-relay [OPTIONS]` and where to read more.
    pub fn usage() -> String {
        "usage: hearth-relay [OPTIONS]   (hearth-relay --help lists them)".to_owned()
    }
}

fn first_line(rendered: &str) -> String {
    rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned()
}

/// `250ms`, `30s`, `2m`, `1h`, or a bare number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(args: &[&str]) -> String {
        match Config::from_args(args.iter().copied()) {
            Err(ConfigError::Invalid(m)) => m,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_without_arguments() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.www, PathBuf::from("www"));
        assert_eq!(c.data, None);
        assert!(c.origins.is_empty());
        assert_eq!(c.limits.request_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.delivery_window, 4);
    }

    #[test]
    fn both_flag_spellings_are_accepted() {
        let c = Config::from_args(["--listen", "0.0.0.0:9000", "--www=/srv/page"]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.www, PathBuf::from("/srv/page"));
    }

    #[test]
    fn exit_with_stdin_is_a_plain_switch() {
        assert!(
            !Config::from_args(Vec::<String>::new())
                .unwrap()
                .exit_with_stdin
        );
        assert!(
            Config::from_args(["--exit-with-stdin"])
                .unwrap()
                .exit_with_stdin
        );
        assert!(invalid(&["--exit-with-stdin=yes"]).contains("--exit-with-stdin"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let m = invalid(&["--listen"]);
        assert!(
            m.contains("--listen") && m.contains("value is required"),
            "{m}"
        );
        let m = invalid(&["--listen", "localhost"]);
        assert!(m.contains("'localhost'") && m.contains("--listen"), "{m}");
        let m = invalid(&["--port", "1"]);
        assert!(m.contains("unexpected argument '--port'"), "{m}");
        assert!(
            matches!(Config::from_args(["-h"]), Err(ConfigError::Help(h)) if h.contains("--exit-with-stdin"))
        );
        assert!(invalid(&["--idle-timeout", "soon"]).contains("not a duration"));
    }

    #[test]
    fn relay_options_parse() {
        let c = Config::from_args([
            "--data",
            "/var/lib/relay",
            "--origin",
            "https://a.example",
            "--origin=https://b.example",
            "--idle-timeout",
            "250ms",
            "--queue-max-count",
            "5",
        ])
        .unwrap();
        assert_eq!(c.data, Some(PathBuf::from("/var/lib/relay")));
        assert_eq!(c.origins, ["https://a.example", "https://b.example"]);
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.queue_max_count, 5);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
