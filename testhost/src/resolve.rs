//! Where a server name is reached: the spec's server discovery, so far its first two steps.
//!
//! 1. An IP literal: that address, at the given port or 8448. No certificate name but the IP.
//! 2. A hostname with a port: its A/AAAA records, at that port; the certificate must name the
//!    hostname.
//! 3. A hostname without a port: the spec asks `/.well-known/matrix/server` and SRV records
//!    first. Not done yet: the A/AAAA records at 8448 (the spec's last resort) are used.
//!
//! Either way the `Host` header is the server name. A key-named server has no address at all:
//! it is reached through a relay.

use std::net::{IpAddr, SocketAddr};

use hearth_core::keys::key_from_name;
use ruma::ServerName;
use rustls::pki_types::ServerName as TlsName;

/// The federation port when the server name gives none.
pub const DEFAULT_PORT: u16 = 8448;

#[derive(Debug, Clone)]
pub struct Target {
    pub addrs: Vec<SocketAddr>,
    /// The name the certificate must be valid for (and the SNI, for hostnames).
    pub tls_name: TlsName<'static>,
    pub host_header: String,
}

pub async fn resolve(server: &ServerName) -> Result<Target, String> {
    if key_from_name(server).is_some() {
        return Err(
            "a key-named server has no network address; it is reached through a relay".to_owned(),
        );
    }
    let host = server.host();
    let port = server.port().unwrap_or(DEFAULT_PORT);
    let host_header = server.as_str().to_owned();
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(Target {
            addrs: vec![SocketAddr::new(ip, port)],
            tls_name: TlsName::IpAddress(ip.into()),
            host_header,
        });
    }
    let tls_name = TlsName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(Target {
        addrs,
        tls_name,
        host_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &ServerName {
        <&ServerName>::try_from(s).expect("valid server name")
    }

    #[tokio::test]
    async fn ip_literals_are_used_as_they_are() {
        let t = resolve(name("127.0.0.1:8449")).await.expect("resolves");
        assert_eq!(
            t.addrs,
            vec!["127.0.0.1:8449".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(t.host_header, "127.0.0.1:8449");
        assert!(matches!(t.tls_name, TlsName::IpAddress(_)));
        let t = resolve(name("[::1]")).await.expect("resolves");
        assert_eq!(
            t.addrs,
            vec!["[::1]:8448".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(t.host_header, "[::1]");
    }

    #[tokio::test]
    async fn a_hostname_with_a_port_is_looked_up_at_that_port() {
        let t = resolve(name("localhost:9000")).await.expect("resolves");
        assert!(
            t.addrs
                .iter()
                .all(|a| a.port() == 9000 && a.ip().is_loopback())
        );
        assert_eq!(t.host_header, "localhost:9000");
        assert!(matches!(t.tls_name, TlsName::DnsName(_)));
    }

    #[tokio::test]
    async fn key_named_servers_have_no_address() {
        let hex = "ab".repeat(32);
        assert!(resolve(name(&hex)).await.is_err());
    }
}
