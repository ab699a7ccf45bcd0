//! Frames: one binary WebSocket message each, a one-byte type, a compact big-endian header,
//! and for requests and answers the raw body as the rest of the message.
//!
//! Decoding borrows from the message, so a relay can check a frame and pass its body on
//! without copying it; [`Request::encode_to`] writes the same request with another id and peer.

/// The protocol version this crate speaks; carried in the challenge and the hello.
pub const VERSION: u8 = 1;

/// Frame type bytes.
pub mod kind {
    pub const CHALLENGE: u8 = 0x01;
    pub const HELLO: u8 = 0x02;
    pub const WELCOME: u8 = 0x03;
    pub const REQUEST: u8 = 0x10;
    pub const RESPONSE: u8 = 0x11;
}

/// Field limits. A server name is at most 255 bytes in Matrix; methods are short tokens;
/// header names and values fit in 16 bits.
pub const MAX_PEER_LEN: usize = u8::MAX as usize;
pub const MAX_METHOD_LEN: usize = 16;
pub const MAX_PATH_LEN: usize = u16::MAX as usize;
pub const MAX_HEADERS: usize = u16::MAX as usize;
pub const MAX_HEADER_NAME_LEN: usize = u16::MAX as usize;
pub const MAX_HEADER_VALUE_LEN: usize = u16::MAX as usize;

/// Offset of the `u32` id in a request or response frame (right after the type byte).
pub const ID_OFFSET: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownKind(u8),
    #[error("frame ends inside its {0}")]
    Truncated(&'static str),
    #[error("{0} frame has {1} trailing bytes")]
    Trailing(&'static str, usize),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} is too long")]
    TooLong(&'static str),
}

/// The relay's first frame: a fresh random nonce to sign, and the largest frame it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub version: u8,
    pub nonce: [u8; 32],
    pub max_frame_bytes: u32,
}

/// The server's answer to the challenge: its name, the relay origin it signed for, and an
/// ed25519 signature over [`crate::auth::signed_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    pub version: u8,
    pub name: &'a str,
    pub origin: &'a str,
    pub signature: [u8; 64],
}

/// The relay accepted the hello. `queued` is how many stored transactions wait for this
/// server; they follow as ordinary requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome<'a> {
    pub name: &'a str,
    pub queued: u32,
}

/// A federation request. From a server to the relay, `peer` is the destination; from the relay
/// to a server, it is the authenticated source. The id is chosen by whoever sends the frame
/// and comes back in the [`Response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: u32,
    pub peer: &'a str,
    pub method: &'a str,
    /// Path and query, as in an HTTP request line (`/_matrix/federation/v1/send/1?x=y`).
    pub path: &'a str,
    pub headers: Headers<'a>,
    pub body: &'a [u8],
}

/// The answer to the request with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: u32,
    pub status: u16,
    pub headers: Headers<'a>,
    pub body: &'a [u8],
}

/// A checked header block: `count` entries of `name_len u16, name, value_len u16, value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headers<'a> {
    count: u16,
    raw: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Challenge(Challenge),
    Hello(Hello<'a>),
    Welcome(Welcome<'a>),
    Request(Request<'a>),
    Response(Response<'a>),
}

impl<'a> Frame<'a> {
    /// Parses and checks one frame. Every field is validated, so a frame that decodes can be
    /// passed on as it is.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (&kind, rest) = bytes.split_first().ok_or(FrameError::Empty)?;
        let mut r = Reader { buf: rest };
        let frame = match kind {
            kind::CHALLENGE => {
                let version = r.u8("version")?;
                let nonce = r.array::<32>("nonce")?;
                let max_frame_bytes = r.u32("max frame size")?;
                r.finish("challenge")?;
                Frame::Challenge(Challenge {
                    version,
                    nonce,
                    max_frame_bytes,
                })
            }
            kind::HELLO => {
                let version = r.u8("version")?;
                let name = r.str_u8("name")?;
                let origin = r.str_u16("origin")?;
                let signature = r.array::<64>("signature")?;
                r.finish("hello")?;
                Frame::Hello(Hello {
                    version,
                    name,
                    origin,
                    signature,
                })
            }
            kind::WELCOME => {
                let name = r.str_u8("name")?;
                let queued = r.u32("queued count")?;
                r.finish("welcome")?;
                Frame::Welcome(Welcome { name, queued })
            }
            kind::REQUEST => {
                let id = r.u32("id")?;
                let peer = r.str_u8("peer")?;
                if peer.is_empty() {
                    return Err(FrameError::Invalid("peer"));
                }
                let method = r.str_u8("method")?;
                if method.is_empty()
                    || method.len() > MAX_METHOD_LEN
                    || !method.bytes().all(is_token_byte)
                {
                    return Err(FrameError::Invalid("method"));
                }
                let path = r.str_u16("path")?;
                if !path.starts_with('/') || !path.bytes().all(is_path_byte) {
                    return Err(FrameError::Invalid("path"));
                }
                let headers = r.headers()?;
                Frame::Request(Request {
                    id,
                    peer,
                    method,
                    path,
                    headers,
                    body: r.buf,
                })
            }
            kind::RESPONSE => {
                let id = r.u32("id")?;
                let status = r.u16("status")?;
                if !(100..=599).contains(&status) {
                    return Err(FrameError::Invalid("status"));
                }
                let headers = r.headers()?;
                Frame::Response(Response {
                    id,
                    status,
                    headers,
                    body: r.buf,
                })
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(frame)
    }
}

impl Challenge {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 1 + 32 + 4);
        out.push(kind::CHALLENGE);
        out.push(self.version);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.max_frame_bytes.to_be_bytes());
        out
    }
}

impl Hello<'_> {
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(2 + 1 + self.name.len() + 2 + self.origin.len() + 64);
        out.push(kind::HELLO);
        out.push(self.version);
        put_str_u8(&mut out, self.name, "name")?;
        put_str_u16(&mut out, self.origin, "origin")?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }
}

impl Welcome<'_> {
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(1 + 1 + self.name.len() + 4);
        out.push(kind::WELCOME);
        put_str_u8(&mut out, self.name, "name")?;
        out.extend_from_slice(&self.queued.to_be_bytes());
        Ok(out)
    }
}

impl<'a> Request<'a> {
    /// The encoded size of this request with `peer` in place of its own.
    pub fn encoded_len_with_peer(&self, peer: &str) -> usize {
        1 + 4
            + 1
            + peer.len()
            + 1
            + self.method.len()
            + 2
            + self.path.len()
            + 2
            + self.headers.raw.len()
            + self.body.len()
    }

    /// Writes this request with another id and peer (what a relay does when it passes a request
    /// on: the id becomes its own, the destination becomes the source). Headers and body are
    /// copied byte for byte.
    pub fn encode_to(&self, id: u32, peer: &str, out: &mut Vec<u8>) -> Result<(), FrameError> {
        if peer.is_empty() {
            return Err(FrameError::Invalid("peer"));
        }
        out.reserve(self.encoded_len_with_peer(peer));
        out.push(kind::REQUEST);
        out.extend_from_slice(&id.to_be_bytes());
        put_str_u8(out, peer, "peer")?;
        put_str_u8(out, self.method, "method")?;
        put_str_u16(out, self.path, "path")?;
        out.extend_from_slice(&self.headers.count.to_be_bytes());
        out.extend_from_slice(self.headers.raw);
        out.extend_from_slice(self.body);
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.encode_to(self.id, self.peer, &mut out)?;
        Ok(out)
    }
}

impl Response<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 4 + 2 + 2 + self.headers.raw.len() + self.body.len());
        out.push(kind::RESPONSE);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.headers.count.to_be_bytes());
        out.extend_from_slice(self.headers.raw);
        out.extend_from_slice(self.body);
        out
    }
}

/// Writes a request frame from parts. Fails if a field is longer than its length prefix allows
/// or is not what the decoder accepts.
pub fn encode_request<'h>(
    id: u32,
    peer: &str,
    method: &str,
    path: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: &[u8],
) -> Result<Vec<u8>, FrameError> {
    if peer.is_empty() {
        return Err(FrameError::Invalid("peer"));
    }
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.bytes().all(is_token_byte) {
        return Err(FrameError::Invalid("method"));
    }
    if !path.starts_with('/') || !path.bytes().all(is_path_byte) {
        return Err(FrameError::Invalid("path"));
    }
    let mut out = Vec::with_capacity(64 + peer.len() + path.len() + body.len());
    out.push(kind::REQUEST);
    out.extend_from_slice(&id.to_be_bytes());
    put_str_u8(&mut out, peer, "peer")?;
    put_str_u8(&mut out, method, "method")?;
    put_str_u16(&mut out, path, "path")?;
    put_headers(&mut out, headers)?;
    out.extend_from_slice(body);
    Ok(out)
}

/// Writes a response frame from parts.
pub fn encode_response<'h>(
    id: u32,
    status: u16,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: &[u8],
) -> Result<Vec<u8>, FrameError> {
    if !(100..=599).contains(&status) {
        return Err(FrameError::Invalid("status"));
    }
    let mut out = Vec::with_capacity(64 + body.len());
    out.push(kind::RESPONSE);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
    put_headers(&mut out, headers)?;
    out.extend_from_slice(body);
    Ok(out)
}

/// Overwrites the id of an encoded request or response in place (a relay passing an answer
/// back changes nothing else).
pub fn set_id(frame: &mut [u8], id: u32) -> Result<(), FrameError> {
    match frame.first() {
        Some(&kind::REQUEST | &kind::RESPONSE) if frame.len() >= ID_OFFSET + 4 => {
            frame[ID_OFFSET..ID_OFFSET + 4].copy_from_slice(&id.to_be_bytes());
            Ok(())
        }
        Some(_) => Err(FrameError::Invalid("frame for an id")),
        None => Err(FrameError::Empty),
    }
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded entries, without the count.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            left: self.count,
            buf: self.raw,
        }
    }

    /// The first value of a header, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterates a header block that [`Frame::decode`] already checked.
pub struct HeaderIter<'a> {
    left: u16,
    buf: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut r = Reader { buf: self.buf };
        // Checked at decode time; a failure here would mean a bug, so end the iteration.
        let name = r.str_u16("header name").ok()?;
        let value = r.bytes_u16("header value").ok()?;
        self.buf = r.buf;
        Some((name, value))
    }
}

/// HTTP token characters (RFC 9110 `tchar`), for methods and header names.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What may appear in a request target: visible ASCII (non-ASCII must be percent-encoded).
fn is_path_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// A header value may hold visible ASCII, spaces, tabs and obs-text, never CR, LF or NUL.
fn is_header_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn put_str_u8(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), FrameError> {
    let len = u8::try_from(s.len()).map_err(|_| FrameError::TooLong(what))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_str_u16(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), FrameError> {
    put_bytes_u16(out, s.as_bytes(), what)
}

fn put_bytes_u16(out: &mut Vec<u8>, b: &[u8], what: &'static str) -> Result<(), FrameError> {
    let len = u16::try_from(b.len()).map_err(|_| FrameError::TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

fn put_headers<'h>(
    out: &mut Vec<u8>,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<(), FrameError> {
    let count_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut count: u16 = 0;
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(FrameError::Invalid("header name"));
        }
        if !value.iter().copied().all(is_header_value_byte) {
            return Err(FrameError::Invalid("header value"));
        }
        count = count
            .checked_add(1)
            .ok_or(FrameError::TooLong("header list"))?;
        put_str_u16(out, name, "header name")?;
        put_bytes_u16(out, value, "header value")?;
    }
    out[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn str_u8(&mut self, what: &'static str) -> Result<&'a str, FrameError> {
        let n = usize::from(self.u8(what)?);
        std::str::from_utf8(self.take(n, what)?).map_err(|_| FrameError::Invalid(what))
    }

    fn bytes_u16(&mut self, what: &'static str) -> Result<&'a [u8], FrameError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }

    fn str_u16(&mut self, what: &'static str) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes_u16(what)?).map_err(|_| FrameError::Invalid(what))
    }

    fn headers(&mut self) -> Result<Headers<'a>, FrameError> {
        let count = self.u16("header count")?;
        let start = self.buf;
        for _ in 0..count {
            let name = self.str_u16("header name")?;
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(FrameError::Invalid("header name"));
            }
            let value = self.bytes_u16("header value")?;
            if !value.iter().copied().all(is_header_value_byte) {
                return Err(FrameError::Invalid("header value"));
            }
        }
        let used = start.len() - self.buf.len();
        Ok(Headers {
            count,
            raw: &start[..used],
        })
    }

    fn finish(&self, what: &'static str) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing(what, self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_keeps_the_body_raw() {
        let body = b"\x00\xff{\"pdus\":[]}".as_slice();
        let bytes = encode_request(
            7,
            "dest",
            "PUT",
            "/_matrix/federation/v1/send/1?a=b",
            [
                ("content-type", b"application/json".as_slice()),
                ("authorization", b"X-Matrix origin=\"x\"".as_slice()),
            ],
            body,
        )
        .unwrap();
        let Frame::Request(r) = Frame::decode(&bytes).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.id, 7);
        assert_eq!(r.peer, "dest");
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/_matrix/federation/v1/send/1?a=b");
        assert_eq!(r.headers.len(), 2);
        assert_eq!(
            r.headers.get("Content-Type"),
            Some(b"application/json".as_slice())
        );
        assert_eq!(r.body, body);
        assert_eq!(r.encode().unwrap(), bytes);

        let mut other = Vec::new();
        r.encode_to(9, "source", &mut other).unwrap();
        assert_eq!(other.len(), r.encoded_len_with_peer("source"));
        let Frame::Request(o) = Frame::decode(&other).unwrap() else {
            panic!("not a request")
        };
        assert_eq!((o.id, o.peer, o.body), (9, "source", body));
        assert_eq!(o.headers.raw(), r.headers.raw());
    }

    #[test]
    fn response_round_trips_and_its_id_can_be_patched() {
        let mut bytes = encode_response(3, 200, [("x-a", b"1".as_slice())], b"{}").unwrap();
        set_id(&mut bytes, 0xdead_beef).unwrap();
        let Frame::Response(r) = Frame::decode(&bytes).unwrap() else {
            panic!("not a response")
        };
        assert_eq!(
            (r.id, r.status, r.body),
            (0xdead_beef, 200, b"{}".as_slice())
        );
        assert_eq!(
            r.headers.iter().collect::<Vec<_>>(),
            vec![("x-a", b"1".as_slice())]
        );
        assert_eq!(r.encode(), bytes);
    }

    #[test]
    fn handshake_frames_round_trip() {
        let c = Challenge {
            version: VERSION,
            nonce: [5; 32],
            max_frame_bytes: 1 << 20,
        };
        assert_eq!(Frame::decode(&c.encode()).unwrap(), Frame::Challenge(c));
        let h = Hello {
            version: VERSION,
            name: "ab",
            origin: "http://127.0.0.1:8008",
            signature: [9; 64],
        };
        assert_eq!(
            Frame::decode(&h.encode().unwrap()).unwrap(),
            Frame::Hello(h)
        );
        let w = Welcome {
            name: "ab",
            queued: 3,
        };
        assert_eq!(
            Frame::decode(&w.encode().unwrap()).unwrap(),
            Frame::Welcome(w)
        );
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[0x7f]), Err(FrameError::UnknownKind(0x7f)));
        let good = encode_request(1, "d", "GET", "/x", [], b"").unwrap();
        for cut in 1..good.len() {
            assert!(Frame::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let c = Challenge {
            version: 1,
            nonce: [0; 32],
            max_frame_bytes: 1,
        };
        let mut long = c.encode();
        long.push(0);
        assert_eq!(
            Frame::decode(&long),
            Err(FrameError::Trailing("challenge", 1))
        );
        // A header value with a line break would smuggle a header into an HTTP host.
        assert!(
            encode_request(1, "d", "GET", "/x", [("a", b"1\r\nb: 2".as_slice())], b"").is_err()
        );
        let mut smuggled =
            encode_request(1, "d", "GET", "/x", [("a", b"1xb".as_slice())], b"").unwrap();
        let at = smuggled.len() - 2;
        smuggled[at] = b'\n';
        assert_eq!(
            Frame::decode(&smuggled),
            Err(FrameError::Invalid("header value"))
        );
        assert!(encode_request(1, "d", "GE T", "/x", [], b"").is_err());
        assert!(encode_request(1, "d", "GET", "x", [], b"").is_err());
        assert!(encode_request(1, "", "GET", "/x", [], b"").is_err());
        assert!(encode_response(1, 99, [], b"").is_err());
        assert!(set_id(&mut [kind::HELLO, 0, 0, 0, 0], 1).is_err());
    }
}
