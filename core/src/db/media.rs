//! The content repository's records.
//!
//! Layout (keys built with [`super::key`]):
//! - `media`: `server name, media id` → [`MediaRecord`].
//! - `media_data`: `server name, media id, chunk index (u32 BE)` → up to [`CHUNK_SIZE`] bytes.
//!   Large files are split so that no single IndexedDB value grows huge.
//! - `media_pending`: `user, media id` → expiry (u64 BE ms) of an `mxc://` URI created with
//!   `/media/v1/create` and not uploaded yet, so pending uploads per user are cheap to count.
//! - `media_thumbnails`: `server name, media id, "{w}x{h}-{method}"` → [`Thumbnail`] as stored by
//!   [`encode_thumbnail`].

use ruma::{OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};

use super::{key, pos_bytes, pos_from, prefix, to_json};
use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::Batch;

/// Size of one stored piece of a file.
pub const CHUNK_SIZE: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    pub uploader: OwnedUserId,
    pub created_ts: u64,
    /// The upload's `Content-Type`, if the client sent one.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The upload's `filename` query parameter.
    #[serde(default)]
    pub filename: Option<String>,
    pub size: u64,
    pub chunks: u32,
    /// Set while an `mxc://` URI from `/media/v1/create` waits for its content: the time after
    /// which the reservation lapses.
    #[serde(default)]
    pub pending_until: Option<u64>,
}

impl MediaRecord {
    pub fn is_pending(&self) -> bool {
        self.pending_until.is_some()
    }
}

fn media_key(server: &ServerName, media_id: &str) -> Vec<u8> {
    key(&[server.as_bytes(), media_id.as_bytes()])
}

pub async fn get(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
) -> Result<Option<MediaRecord>> {
    hs.get_json("media", &media_key(server, media_id)).await
}

pub fn put_record(
    batch: &mut Batch,
    server: &ServerName,
    media_id: &str,
    rec: &MediaRecord,
) -> Result<()> {
    batch.put("media", media_key(server, media_id), to_json(rec)?);
    Ok(())
}

pub fn delete_record(batch: &mut Batch, server: &ServerName, media_id: &str) {
    batch.delete("media", media_key(server, media_id));
}

/// Writes the file's bytes in chunks and returns how many chunks it took.
pub fn put_content(
    batch: &mut Batch,
    server: &ServerName,
    media_id: &str,
    bytes: &[u8],
) -> Result<u32> {
    let mut count = 0u32;
    for (i, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
        let idx =
            u32::try_from(i).map_err(|_| MatrixError::too_large("file has too many chunks"))?;
        batch.put(
            "media_data",
            key(&[server.as_bytes(), media_id.as_bytes(), &idx.to_be_bytes()]),
            chunk.to_vec(),
        );
        count = idx + 1;
    }
    Ok(count)
}

/// The file's bytes, reassembled and checked against the record.
pub async fn read_content(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    rec: &MediaRecord,
) -> Result<Vec<u8>> {
    let rows = hs
        .scan_prefix(
            "media_data",
            &prefix(&[server.as_bytes(), media_id.as_bytes()]),
        )
        .await?;
    let size = usize::try_from(rec.size)
        .map_err(|_| MatrixError::too_large("file too large for this platform"))?;
    if rows.len() != rec.chunks as usize {
        return Err(MatrixError::unknown(format!(
            "media {media_id}: {} of {} chunks present",
            rows.len(),
            rec.chunks
        )));
    }
    let mut out = Vec::with_capacity(size);
    for (_, chunk) in rows {
        out.extend_from_slice(&chunk);
    }
    if out.len() != size {
        return Err(MatrixError::unknown(format!(
            "media {media_id}: stored size does not match its record"
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pending (created, not yet uploaded) media

pub fn put_pending(batch: &mut Batch, user: &UserId, media_id: &str, expires_at: u64) {
    batch.put(
        "media_pending",
        key(&[user.as_bytes(), media_id.as_bytes()]),
        pos_bytes(expires_at).to_vec(),
    );
}

pub fn delete_pending(batch: &mut Batch, user: &UserId, media_id: &str) {
    batch.delete(
        "media_pending",
        key(&[user.as_bytes(), media_id.as_bytes()]),
    );
}

/// The user's pending uploads as `(storage key, expiry)`.
pub async fn pending_for_user(hs: &Homeserver, user: &UserId) -> Result<Vec<(Vec<u8>, u64)>> {
    Ok(hs
        .scan_prefix("media_pending", &prefix(&[user.as_bytes()]))
        .await?
        .into_iter()
        .filter_map(|(k, v)| pos_from(&v).map(|exp| (k, exp)))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

/// A generated thumbnail, or the decision to serve the original instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thumbnail {
    Image {
        content_type: String,
        bytes: Vec<u8>,
    },
    Original,
}

fn thumbnail_key(server: &ServerName, media_id: &str, variant: &str) -> Vec<u8> {
    key(&[server.as_bytes(), media_id.as_bytes(), variant.as_bytes()])
}

/// One record: a one-byte tag (0 = original, 1 = image), then for images the content type,
/// a NUL and the bytes.
fn encode_thumbnail(t: &Thumbnail) -> Vec<u8> {
    match t {
        Thumbnail::Original => vec![0],
        Thumbnail::Image {
            content_type,
            bytes,
        } => {
            let mut out = Vec::with_capacity(2 + content_type.len() + bytes.len());
            out.push(1);
            out.extend_from_slice(content_type.as_bytes());
            out.push(0);
            out.extend_from_slice(bytes);
            out
        }
    }
}

fn decode_thumbnail(v: &[u8]) -> Option<Thumbnail> {
    match v.split_first()? {
        (0, _) => Some(Thumbnail::Original),
        (1, rest) => {
            let nul = rest.iter().position(|b| *b == 0)?;
            let content_type = std::str::from_utf8(rest.get(..nul)?).ok()?.to_owned();
            Some(Thumbnail::Image {
                content_type,
                bytes: rest.get(nul + 1..)?.to_vec(),
            })
        }
        _ => None,
    }
}

pub async fn get_thumbnail(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    variant: &str,
) -> Result<Option<Thumbnail>> {
    let v = hs
        .store
        .get(
            "media_thumbnails",
            &thumbnail_key(server, media_id, variant),
        )
        .await?;
    // An undecodable cache entry is regenerated rather than reported.
    Ok(v.and_then(|v| decode_thumbnail(&v)))
}

pub fn put_thumbnail(
    batch: &mut Batch,
    server: &ServerName,
    media_id: &str,
    variant: &str,
    t: &Thumbnail,
) {
    batch.put(
        "media_thumbnails",
        thumbnail_key(server, media_id, variant),
        encode_thumbnail(t),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_records_round_trip() {
        let img = Thumbnail::Image {
            content_type: "image/png".into(),
            bytes: vec![0, 1, 2, 0, 255],
        };
        assert_eq!(decode_thumbnail(&encode_thumbnail(&img)), Some(img));
        assert_eq!(
            decode_thumbnail(&encode_thumbnail(&Thumbnail::Original)),
            Some(Thumbnail::Original)
        );
        assert_eq!(decode_thumbnail(&[7]), None);
        assert_eq!(decode_thumbnail(&[]), None);
    }
}
