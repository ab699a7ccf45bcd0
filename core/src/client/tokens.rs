//! Pagination and sync tokens. One global stream position orders everything, so a token is
//! just a position: `s<pos>` means "after everything up to and including `pos`".

use crate::error::{MatrixError, Result};

pub fn format(pos: u64) -> String {
    format!("s{pos}")
}

/// The stream position of a token. Sync tokens may carry a to-device position after `_`
/// (see [`parse_sync`]); pagination ignores it, since clients pass `next_batch` as `from` too.
pub fn parse(token: &str) -> Result<u64> {
    parse_sync(token).map(|(pos, _)| pos)
}

/// A sync token: the stream position, and — when the previous sync had to cut the device's
/// to-device messages short — the position of the last one it delivered.
pub fn parse_sync(token: &str) -> Result<(u64, Option<u64>)> {
    let bad = || MatrixError::invalid_param(format!("invalid pagination token {token:?}"));
    let body = token.strip_prefix('s').ok_or_else(bad)?;
    match body.split_once('_') {
        None => Ok((body.parse().map_err(|_| bad())?, None)),
        Some((pos, td)) => Ok((
            pos.parse().map_err(|_| bad())?,
            Some(td.parse().map_err(|_| bad())?),
        )),
    }
}

pub fn format_sync(pos: u64, to_device: Option<u64>) -> String {
    match to_device {
        Some(td) => format!("s{pos}_{td}"),
        None => format(pos),
    }
}
