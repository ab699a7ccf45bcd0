//! How a server proves its name to a relay.
//!
//! A key-named server's name is the lowercase hex of its ed25519 public key. The relay sends a
//! random 32-byte nonce; the server signs [`signed_message`]: a fixed context string, the
//! relay's origin as the server itself dialed it, and the nonce. The relay accepts the name
//! only if the signature verifies under the key the name spells, the origin is its own, and
//! the nonce is the one it just sent on this connection. So a signature made for one relay
//! is useless at another (the origin differs) and on any later connection (the nonce differs),
//! and a relay that merely passes another relay's challenge along cannot log in as the server.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::frame::{Hello, VERSION};

/// Prefix of every signed hello, so the signature can never be mistaken for one over a Matrix
/// JSON object (which starts with `{`) or over anything else this key signs.
pub const CONTEXT: &[u8] = b"hearth-relay-auth-v1";

/// Length of a key-derived server name: 32 bytes in hex.
pub const KEY_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("relay URL {0:?} has no scheme")]
    NoScheme(String),
    #[error("relay URL scheme {0:?} is not ws, wss, http or https")]
    Scheme(String),
    #[error("relay URL {0:?} has no host")]
    NoHost(String),
    #[error("relay URL {0:?} has an invalid port")]
    Port(String),
    #[error("relay URL {0:?} carries user information")]
    UserInfo(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("protocol version {0} is not supported (this relay speaks {VERSION})")]
    Version(u8),
    #[error("server name is not 64 lowercase hex digits")]
    NotKeyName,
    #[error("server name is not a valid ed25519 public key")]
    BadKey,
    #[error("origin {0:?} is not this relay's")]
    Origin(String),
    #[error("signature does not verify")]
    BadSignature,
}

/// The exact bytes a server signs: `CONTEXT || 0x00 || origin || 0x00 || nonce`. The origin
/// never contains a NUL and the nonce has a fixed length, so the encoding is unambiguous.
pub fn signed_message(origin: &str, nonce: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 2 + origin.len() + nonce.len());
    m.extend_from_slice(CONTEXT);
    m.push(0);
    m.extend_from_slice(origin.as_bytes());
    m.push(0);
    m.extend_from_slice(nonce);
    m
}

/// The relay origin a server signs for, from the URL it connects to (or the page's own origin):
/// `scheme://host[:port]`, scheme `http` for `ws`/`http` and `https` for `wss`/`https`, scheme
/// and host lowercased, the default port (80, 443) left out, path, query and fragment dropped.
/// `ws://LocalHost:8008/_hearth/relay` → `http://localhost:8008`.
pub fn normalize_origin(url: &str) -> Result<String, OriginError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| OriginError::NoScheme(url.to_owned()))?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ("http", 80),
        "https" | "wss" => ("https", 443),
        _ => return Err(OriginError::Scheme(scheme.to_owned())),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(OriginError::UserInfo(url.to_owned()));
    }
    // An IPv6 literal keeps its brackets; the port is whatever follows the last `]:` or `:`.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if host.is_empty() || host == "[]" {
        return Err(OriginError::NoHost(url.to_owned()));
    }
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p.parse().map_err(|_| OriginError::Port(url.to_owned()))?;
            (n != default_port).then_some(n)
        }
    };
    let host = host.to_ascii_lowercase();
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Whether `name` is a key-derived server name (64 lowercase hex digits). Only such servers
/// can connect to a relay, so only they can be reached through one.
pub fn is_key_name(name: &str) -> bool {
    name.len() == KEY_NAME_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The public key a key-derived name spells.
pub fn key_of_name(name: &str) -> Result<[u8; 32], AuthError> {
    if !is_key_name(name) {
        return Err(AuthError::NotKeyName);
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(name, &mut key).map_err(|_| AuthError::NotKeyName)?;
    Ok(key)
}

/// The name of the server that holds this public key.
pub fn name_of_key(public_key: &[u8; 32]) -> String {
    hex::encode(public_key)
}

/// The relay's check of a hello against the nonce it sent on this connection and the origins
/// it answers to. Returns the public key on success.
pub fn verify_hello(
    hello: &Hello<'_>,
    nonce: &[u8; 32],
    accepted_origins: &[String],
) -> Result<[u8; 32], AuthError> {
    if hello.version != VERSION {
        return Err(AuthError::Version(hello.version));
    }
    let key_bytes = key_of_name(hello.name)?;
    if !accepted_origins.iter().any(|o| o == hello.origin) {
        return Err(AuthError::Origin(hello.origin.to_owned()));
    }
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| AuthError::BadKey)?;
    let signature = Signature::from_bytes(&hello.signature);
    // Strict verification also refuses weak keys and non-canonical signatures, so one name
    // has exactly one way to sign.
    key.verify_strict(&signed_message(hello.origin, nonce), &signature)
        .map_err(|_| AuthError::BadSignature)?;
    Ok(key_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        for (url, want) in [
            ("ws://127.0.0.1:8008/_hearth/relay", "http://127.0.0.1:8008"),
            ("http://LocalHost:8008", "http://localhost:8008"),
            (
                "wss://Relay.Example.org:443/x?y#z",
                "https://relay.example.org",
            ),
            (
                "https://relay.example.org:8443",
                "https://relay.example.org:8443",
            ),
            ("ws://[::1]:9000/", "http://[::1]:9000"),
            ("ws://[::1]", "http://[::1]"),
            ("http://h:80", "http://h"),
        ] {
            assert_eq!(normalize_origin(url).as_deref(), Ok(want), "{url}");
        }
        assert!(normalize_origin("127.0.0.1:8008").is_err());
        assert!(normalize_origin("ftp://x").is_err());
        assert!(normalize_origin("ws://:80").is_err());
        assert!(normalize_origin("ws://h:99999").is_err());
        assert!(normalize_origin("ws://u:p@h").is_err());
    }

    #[test]
    fn names_are_lowercase_hex_keys() {
        let name = "ab".repeat(32);
        assert_eq!(key_of_name(&name), Ok([0xab; 32]));
        assert_eq!(name_of_key(&[0xab; 32]), name);
        assert!(key_of_name(&"AB".repeat(32)).is_err());
        assert!(key_of_name("abab").is_err());
        assert!(!is_key_name("example.org"));
    }

    #[test]
    fn the_signed_message_binds_origin_and_nonce() {
        let a = signed_message("http://a", &[1; 32]);
        assert!(a.starts_with(CONTEXT));
        assert_ne!(a, signed_message("http://b", &[1; 32]));
        assert_ne!(a, signed_message("http://a", &[2; 32]));
    }
}
