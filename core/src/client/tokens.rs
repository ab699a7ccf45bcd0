//! Pagination and sync tokens. One global stream position orders everything, so a token is
//! just a position: `s<pos>` means "after everything up to and including `pos`".

use crate::error::{MatrixError, Result};

pub fn format(pos: u64) -> String {
    format!("s{pos}")
}

pub fn parse(token: &str) -> Result<u64> {
    token
        .strip_prefix('s')
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| MatrixError::invalid_param(format!("invalid pagination token {token:?}")))
}
