//! The server's ed25519 signing key and the server name derived from it.

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
    pub fn from_seed(seed: &[u8]) -> Result<Self, KeyError> {
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
        let server_name =
            ServerName::parse(&hex_name).map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Self {
            seed,
            pair,
            server_name,
            key_id: format!("ed25519:{version}"),
            public_key,
        })
    }
}
