//! Command-line configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8008";

pub const USAGE: &str = "\
usage: hearth-relay [--listen ADDR] [--www DIR] [--exit-with-stdin]

  --listen ADDR       address to listen on (default 127.0.0.1:8008; port 0 picks a free port)
  --www DIR           directory with the page to serve (default ./www)
  --exit-with-stdin   shut down when standard input closes: a parent that gives the relay a
                      pipe takes it down with it, however the parent ends
  -h, --help          show this help";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub www: PathBuf,
    pub exit_with_stdin: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("help requested")]
    Help,
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("invalid listen address {0:?}: expected IP:PORT")]
    BadListen(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
}

impl Config {
    /// Parses arguments (without the program name). Accepts `--flag value` and `--flag=value`.
    pub fn from_args<I, S>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut listen = None;
        let mut www = None;
        let mut exit_with_stdin = false;
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Err(ConfigError::Help),
                "--exit-with-stdin" if inline.is_none() => exit_with_stdin = true,
                "--listen" | "--www" => {
                    let value = match inline {
                        Some(v) => v,
                        None => args
                            .next()
                            .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?,
                    };
                    if flag == "--listen" {
                        listen = Some(value.parse().map_err(|_| ConfigError::BadListen(value))?);
                    } else {
                        www = Some(PathBuf::from(value));
                    }
                }
                _ => return Err(ConfigError::Unknown(arg)),
            }
        }
        let default_listen = DEFAULT_LISTEN
            .parse()
            .map_err(|_| ConfigError::BadListen(DEFAULT_LISTEN.to_owned()))?;
        Ok(Self {
            listen: listen.unwrap_or(default_listen),
            www: www.unwrap_or_else(|| PathBuf::from("www")),
            exit_with_stdin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_without_arguments() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.www, PathBuf::from("www"));
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
        assert_eq!(
            Config::from_args(["--exit-with-stdin=yes"]),
            Err(ConfigError::Unknown("--exit-with-stdin=yes".into()))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(
            Config::from_args(["--listen"]),
            Err(ConfigError::MissingValue("--listen".into()))
        );
        assert_eq!(
            Config::from_args(["--listen", "localhost"]),
            Err(ConfigError::BadListen("localhost".into()))
        );
        assert_eq!(
            Config::from_args(["--port", "1"]),
            Err(ConfigError::Unknown("--port".into()))
        );
        assert_eq!(Config::from_args(["-h"]), Err(ConfigError::Help));
    }
}
