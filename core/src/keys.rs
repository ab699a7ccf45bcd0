//! The server's ed25519 signing key, and its server name: the lowercase hex of the public key
//! (a *key-named* server, which peers verify from the name alone), or a DNS name or IP literal
//! given in the configuration (a *named* server, whose key peers fetch from
//! `/_matrix/key/v2/server`).

use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedServerName, ServerName};

/// DER prefix of a PKCS#8 v1 document wrapping a raw 32-byte ed25519 seed (RFC 8410).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a signing key seed must be 32 bytes, got {0}")]
    SeedLength(usize),
    #[error("invalid signing key: {0}")]
    Invalid(String),
    #[error(
        "{0} cannot be a configured server name: 64 hex digits name a key-named server, \
         whose name is its own public key"
    )]
    KeyNamedLookalike(String),
}

/// The ed25519 public key a key-named server's name stands for: the name is exactly the 64
/// lowercase hex digits of the key. Any other name (no DNS name has a 64-character label) is a
/// named server.
pub fn key_from_name(name: &ServerName) -> Option<[u8; 32]> {
    let s = name.as_str();
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(s, &mut key).ok()?;
    Some(key)
}

/// The key id of a key-named server's key: `ed25519:` and the first 8 hex digits of the name.
pub fn key_id_for_name(name: &ServerName) -> Option<String> {
    key_from_name(name).map(|_| format!("ed25519:{}", &name.as_str()[..8]))
}

pub struct ServerKey {
    pub seed: [u8; 32],
    pub pair: Ed25519KeyPair,
    pub server_name: OwnedServerName,
    /// `ed25519:<first 8 hex digits of the public key>`.
    pub key_id: String,
    pub public_key: [u8; 32],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// The raw ed25519 signature of `message` (what the relay's hello asks for).
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        let sig = ruma::signatures::KeyPair::sign(&self.pair, message);
        let mut out = [0u8; 64];
        for (o, b) in out.iter_mut().zip(sig.as_bytes()) {
            *o = *b;
        }
        out
    }

    /// A key-named server's key: its name is the hex of the public key.
    pub fn from_seed(seed: &[u8]) -> Result<Self, KeyError> {
        Self::from_seed_named(seed, None)
    }

    /// The key of a server called `name`, or key-named when `name` is `None`. The key id is
    /// derived from the public key either way, so a named server whose key changes also
    /// changes its key id: peers (Synapse) cache keys by id and would otherwise keep checking
    /// against the old key.
    pub fn from_seed_named(seed: &[u8], name: Option<&ServerName>) -> Result<Self, KeyError> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| KeyError::SeedLength(seed.len()))?;
        let mut doc = PKCS8_ED25519_PREFIX.to_vec();
        doc.extend_from_slice(&seed);
        let probe = Ed25519KeyPair::from_der(&doc, String::new())
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        let public_key = probe.public_key();
        let hex_name = hex::encode(public_key);
        let version = hex_name[..8].to_owned();
        let pair = Ed25519KeyPair::from_der(&doc, version.clone())
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        let server_name = match name {
            Some(name) if key_from_name(name).is_some() => {
                return Err(KeyError::KeyNamedLookalike(name.to_string()));
            }
            Some(name) => name.to_owned(),
            None => ServerName::parse(&hex_name).map_err(|e| KeyError::Invalid(e.to_string()))?,
        };
        Ok(Self {
            seed,
            pair,
            server_name,
            key_id: format!("ed25519:{version}"),
            public_key,
        })
    }
}
