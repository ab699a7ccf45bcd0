//! Thumbnails. Deciding what to make is here, from the image's header alone: the size, the
//! crop, whether the original may stand in. Making it (decode, crop, resize, encode) is the
//! world's job ([`World::render_thumbnail`]): natively the `image` crate does it (feature
//! `image`), while the browser uses its own codecs, so the wasm carries none.

use crate::db::media::Thumbnail;
use crate::world::World;

/// Larger images are refused rather than decoded: decoding costs 4 bytes per pixel.
pub const MAX_THUMBNAIL_PIXELS: u64 = 40_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

/// The size and method a thumbnail is made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub width: u32,
    pub height: u32,
    pub method: Method,
}

impl Plan {
    /// The cache key of thumbnails made to this plan.
    pub fn variant(&self) -> String {
        let m = match self.method {
            Method::Crop => "crop",
            Method::Scale => "scale",
        };
        format!("{}x{}-{m}", self.width, self.height)
    }
}

/// The sizes the spec says servers should produce.
const STANDARD: [Plan; 5] = [
    Plan {
        width: 32,
        height: 32,
        method: Method::Crop,
    },
    Plan {
        width: 96,
        height: 96,
        method: Method::Crop,
    },
    Plan {
        width: 320,
        height: 240,
        method: Method::Scale,
    },
    Plan {
        width: 640,
        height: 480,
        method: Method::Scale,
    },
    Plan {
        width: 800,
        height: 600,
        method: Method::Scale,
    },
];

/// The smallest standard size with the requested method that is at least as large as the
/// request (and, for crop, of the requested aspect ratio), else the request itself: the
/// spec forbids thumbnails smaller than asked for, and standard sizes keep the cache small.
pub fn plan(width: u32, height: u32, method: Method) -> Plan {
    STANDARD
        .iter()
        .filter(|p| p.method == method && p.width >= width && p.height >= height)
        .filter(|p| {
            method == Method::Scale
                || u64::from(p.width) * u64::from(height) == u64::from(p.height) * u64::from(width)
        })
        .min_by_key(|p| u64::from(p.width) * u64::from(p.height))
        .copied()
        .unwrap_or(Plan {
            width,
            height,
            method,
        })
}

/// The image formats thumbnails are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Gif,
    WebP,
}

impl Format {
    fn sniff(bytes: &[u8]) -> Option<Self> {
        match imagesize::image_type(bytes).ok()? {
            imagesize::ImageType::Png => Some(Self::Png),
            imagesize::ImageType::Jpeg => Some(Self::Jpeg),
            imagesize::ImageType::Gif => Some(Self::Gif),
            imagesize::ImageType::Webp => Some(Self::WebP),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::WebP => "image/webp",
        }
    }
}

/// What a thumbnail is encoded as: JPEG for JPEG sources (photos), PNG for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Png,
    Jpeg,
}

impl Output {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
        }
    }

    /// JPEG quality, 0–100.
    pub const JPEG_QUALITY: u8 = 85;
}

/// A rectangle of pixels: `x`, `y` from the top left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One thumbnail to render: decode the image (its first frame), turn it upright as its EXIF
/// orientation says (as browsers do when they show it), take `source` out of it, resize that to
/// exactly `width` × `height`, encode it as `output`. Sizes and rectangles are upright ones.
#[derive(Debug, Clone, Copy)]
pub struct Render<'a> {
    pub bytes: &'a [u8],
    pub format: Format,
    /// The image's upright size.
    pub full_width: u32,
    pub full_height: u32,
    /// EXIF orientation, 1–8 (1: already upright).
    pub orientation: u8,
    pub source: Rect,
    pub width: u32,
    pub height: u32,
    pub output: Output,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("this host cannot decode images")]
    Unsupported,
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("content is not an image this server can read")]
    NotAnImage,
    #[error("image of {width}x{height} pixels is too large to thumbnail")]
    TooLarge { width: u32, height: u32 },
    #[error("{0}")]
    Unreadable(String),
}

/// Whether a PNG is animated (APNG): its `acTL` chunk comes before the first `IDAT`.
fn is_apng(bytes: &[u8]) -> bool {
    const SIGNATURE: usize = 8;
    let mut at = SIGNATURE;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match &header[4..8] {
            b"acTL" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => {}
        }
        // Length, type, data, CRC.
        at = match at.checked_add(12).and_then(|a| a.checked_add(len)) {
            Some(next) => next,
            None => return false,
        };
    }
    false
}

/// The EXIF orientation of a JPEG (1–8), 1 when it has none. Phones store photos sideways
/// and say so here; a thumbnail made without it comes out rotated.
fn exif_orientation(bytes: &[u8]) -> u8 {
    jpeg_exif(bytes)
        .and_then(tiff_orientation)
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

/// The TIFF structure inside a JPEG's APP1 `Exif` segment.
fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 2; // after SOI
    loop {
        let marker = *bytes.get(at + 1)?;
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        // Start of scan: the metadata segments are all before it.
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let data = bytes.get(at + 4..at + 2 + len)?;
        if marker == 0xE1
            && let Some(tiff) = data.strip_prefix(b"Exif\0\0")
        {
            return Some(tiff);
        }
        at += 2 + len;
    }
}

/// Tag 0x0112 of IFD0.
fn tiff_orientation(tiff: &[u8]) -> Option<u8> {
    let little = match tiff.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = [*tiff.get(at)?, *tiff.get(at + 1)?];
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = [
            *tiff.get(at)?,
            *tiff.get(at + 1)?,
            *tiff.get(at + 2)?,
            *tiff.get(at + 3)?,
        ];
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries.min(512)).find_map(|i| {
        let entry = ifd + 2 + i * 12;
        // A SHORT value sits in the first two bytes of the value field.
        (u16_at(entry)? == 0x0112).then(|| u16_at(entry + 8).and_then(|v| u8::try_from(v).ok()))?
    })
}

/// Whether the original may be served as is. It never is upscaled; but it must not be
/// animated unless the client asked for animation.
fn original_allowed(format: Format, bytes: &[u8], animated: bool) -> bool {
    match format {
        Format::Jpeg => true,
        Format::Png => animated || !is_apng(bytes),
        // GIF and WebP may be animated; telling costs a full parse, so only when allowed.
        Format::Gif | Format::WebP => animated,
    }
}

/// The largest centred rectangle of `w:h` aspect inside `ow x oh`.
fn crop_rect(ow: u32, oh: u32, w: u32, h: u32) -> Rect {
    let (ow64, oh64, w64, h64) = (u64::from(ow), u64::from(oh), u64::from(w), u64::from(h));
    let (cw, ch) = if ow64 * h64 > oh64 * w64 {
        // Wider than wanted: keep the full height.
        (((oh64 * w64) / h64).max(1), oh64)
    } else {
        (ow64, ((ow64 * h64) / w64).max(1))
    };
    // Both are bounded by the original's u32 dimensions.
    let (cw, ch) = (cw.min(ow64) as u32, ch.min(oh64) as u32);
    Rect {
        x: (ow - cw) / 2,
        y: (oh - ch) / 2,
        width: cw,
        height: ch,
    }
}

/// `ow x oh` scaled down, aspect kept, to fit inside `w x h` (rounded, at least one pixel).
fn fit_within(ow: u32, oh: u32, w: u32, h: u32) -> (u32, u32) {
    let (ow64, oh64, w64, h64) = (u64::from(ow), u64::from(oh), u64::from(w), u64::from(h));
    let scaled = |num: u64, den: u64, by: u64| ((num * by * 2 + den) / (2 * den)).max(1);
    if ow64 * h64 >= oh64 * w64 {
        (w, scaled(oh64, ow64, w64).min(h64) as u32)
    } else {
        (scaled(ow64, oh64, h64).min(w64) as u32, h)
    }
}

/// What to render for `plan`, or `None` when the original serves as its own thumbnail.
fn decide(bytes: &[u8], plan: Plan, animated: bool) -> Result<Option<Render<'_>>, ThumbnailError> {
    let format = Format::sniff(bytes).ok_or(ThumbnailError::NotAnImage)?;
    let size = imagesize::blob_size(bytes)
        .map_err(|e| ThumbnailError::Unreadable(format!("unreadable image header: {e}")))?;
    let orientation = if format == Format::Jpeg {
        exif_orientation(bytes)
    } else {
        1
    };
    let (ow, oh) = match (u32::try_from(size.width), u32::try_from(size.height)) {
        // Orientations 5–8 turn the image a quarter: width and height trade places.
        (Ok(w), Ok(h)) if w > 0 && h > 0 && orientation >= 5 => (h, w),
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            return Err(ThumbnailError::Unreadable(format!(
                "image header gives an impossible size {}x{}",
                size.width, size.height
            )));
        }
    };
    if u64::from(ow) * u64::from(oh) > MAX_THUMBNAIL_PIXELS {
        return Err(ThumbnailError::TooLarge {
            width: ow,
            height: oh,
        });
    }
    let fits = ow <= plan.width && oh <= plan.height;
    if fits && original_allowed(format, bytes, animated) {
        return Ok(None);
    }
    let full = Rect {
        x: 0,
        y: 0,
        width: ow,
        height: oh,
    };
    let (source, (width, height)) = if fits {
        // Only its first frame is wanted: re-encoded at its own size.
        (full, (ow, oh))
    } else {
        match plan.method {
            Method::Scale => (full, fit_within(ow, oh, plan.width, plan.height)),
            Method::Crop => {
                let rect = crop_rect(ow, oh, plan.width, plan.height);
                if rect.width > plan.width || rect.height > plan.height {
                    (rect, (plan.width, plan.height))
                } else {
                    // Never upscale: an original smaller than the crop box is only cropped.
                    (rect, (rect.width, rect.height))
                }
            }
        }
    };
    Ok(Some(Render {
        bytes,
        format,
        full_width: ow,
        full_height: oh,
        orientation,
        source,
        width,
        height,
        output: if format == Format::Jpeg {
            Output::Jpeg
        } else {
            Output::Png
        },
    }))
}

/// Makes the thumbnail of `bytes` for `plan`: a PNG (JPEG for JPEG sources), or
/// [`Thumbnail::Original`] when the original is already small enough to serve.
pub async fn make(
    world: &dyn World,
    bytes: &[u8],
    plan: Plan,
    animated: bool,
) -> Result<Thumbnail, ThumbnailError> {
    let Some(job) = decide(bytes, plan, animated)? else {
        return Ok(Thumbnail::Original);
    };
    match world.render_thumbnail(job).await {
        Ok(bytes) => Ok(Thumbnail::Image {
            content_type: job.output.content_type().to_owned(),
            bytes,
        }),
        // A host without codecs treats every image as one it cannot read.
        Err(RenderError::Unsupported) => Err(ThumbnailError::NotAnImage),
        Err(RenderError::Failed(e)) => Err(ThumbnailError::Unreadable(e)),
    }
}

/// Renders with the `image` crate: the native hosts' codecs.
#[cfg(feature = "image")]
pub fn render_with_image(job: &Render<'_>) -> Result<Vec<u8>, RenderError> {
    use std::io::Cursor;

    use image::codecs::jpeg::JpegEncoder;
    use image::metadata::Orientation;
    use image::{DynamicImage, ImageFormat, ImageReader, Limits};

    let failed = |e: image::ImageError| RenderError::Failed(e.to_string());
    let format = match job.format {
        Format::Png => ImageFormat::Png,
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Gif => ImageFormat::Gif,
        Format::WebP => ImageFormat::WebP,
    };
    let mut reader = ImageReader::with_format(Cursor::new(job.bytes), format);
    // The header was checked against the pixel limit; a body claiming more is refused. (The
    // stored size may be the upright one turned a quarter.)
    let side = job.full_width.max(job.full_height);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(failed)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(failed)?;
    if let Some(o) = Orientation::from_exif(job.orientation) {
        img.apply_orientation(o);
    }
    let s = job.source;
    if (s.x, s.y, s.width, s.height) != (0, 0, img.width(), img.height()) {
        img = img.crop_imm(s.x, s.y, s.width, s.height);
    }
    if (img.width(), img.height()) != (job.width, job.height) {
        img = img.thumbnail_exact(job.width, job.height);
    }
    let mut buf = Cursor::new(Vec::new());
    match job.output {
        Output::Jpeg => img
            .to_rgb8()
            .write_with_encoder(JpegEncoder::new_with_quality(
                &mut buf,
                Output::JPEG_QUALITY,
            ))
            .map_err(failed)?,
        Output::Png => img.write_to(&mut buf, ImageFormat::Png).map_err(failed)?,
    }
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_picks_the_smallest_standard_size_that_is_large_enough() {
        let p = |width, height, method| Plan {
            width,
            height,
            method,
        };
        assert_eq!(plan(20, 20, Method::Crop), p(32, 32, Method::Crop));
        assert_eq!(plan(64, 64, Method::Crop), p(96, 96, Method::Crop));
        assert_eq!(plan(100, 100, Method::Scale), p(320, 240, Method::Scale));
        assert_eq!(plan(700, 500, Method::Scale), p(800, 600, Method::Scale));
        // Bigger than every standard size, and a crop of another aspect ratio.
        assert_eq!(plan(1000, 900, Method::Scale), p(1000, 900, Method::Scale));
        assert_eq!(plan(60, 30, Method::Crop), p(60, 30, Method::Crop));
    }

    #[test]
    fn crop_rect_is_centred_and_of_the_requested_aspect() {
        let r = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert_eq!(crop_rect(400, 200, 1, 1), r(100, 0, 200, 200));
        assert_eq!(crop_rect(200, 400, 2, 1), r(0, 150, 200, 100));
        assert_eq!(crop_rect(300, 300, 1, 1), r(0, 0, 300, 300));
    }

    #[test]
    fn fit_within_keeps_the_aspect_and_rounds() {
        assert_eq!(fit_within(1000, 500, 320, 240), (320, 160));
        assert_eq!(fit_within(500, 1000, 320, 240), (120, 240));
        assert_eq!(fit_within(1000, 333, 320, 240), (320, 107));
        assert_eq!(fit_within(10_000, 1, 320, 240), (320, 1));
    }

    #[test]
    fn apng_is_told_by_its_actl_chunk() {
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0; 4]);
            c
        };
        let png = |chunks: &[Vec<u8>]| {
            let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
            chunks.iter().for_each(|c| b.extend_from_slice(c));
            b
        };
        let ihdr = chunk(b"IHDR", &[0; 13]);
        let actl = chunk(b"acTL", &[0; 8]);
        let idat = chunk(b"IDAT", &[1, 2, 3]);
        assert!(is_apng(&png(&[ihdr.clone(), actl.clone(), idat.clone()])));
        assert!(!is_apng(&png(&[ihdr.clone(), idat.clone(), actl])));
        assert!(!is_apng(&png(&[ihdr])));
        // A length running past the end is not a crash.
        assert!(!is_apng(b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffIHDR"));
    }

    /// `jpeg` with an APP1 Exif segment saying `orientation` inserted after SOI.
    fn with_orientation(jpeg: &[u8], orientation: u16, little_endian: bool) -> Vec<u8> {
        let u16b = |v: u16| {
            if little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let u32b = |v: u32| {
            if little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut tiff = if little_endian {
            b"II".to_vec()
        } else {
            b"MM".to_vec()
        };
        tiff.extend_from_slice(&u16b(42));
        tiff.extend_from_slice(&u32b(8));
        tiff.extend_from_slice(&u16b(1)); // one entry
        tiff.extend_from_slice(&u16b(0x0112));
        tiff.extend_from_slice(&u16b(3)); // SHORT
        tiff.extend_from_slice(&u32b(1));
        tiff.extend_from_slice(&u16b(orientation));
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&u32b(0)); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_read_in_both_byte_orders_and_defaults_to_upright() {
        let bare = b"\xFF\xD8\xFF\xD9".to_vec();
        assert_eq!(exif_orientation(&bare), 1);
        assert_eq!(exif_orientation(&with_orientation(&bare, 6, true)), 6);
        assert_eq!(exif_orientation(&with_orientation(&bare, 8, false)), 8);
        // Out of range, truncated or garbage: upright.
        assert_eq!(exif_orientation(&with_orientation(&bare, 42, true)), 1);
        let cut = with_orientation(&bare, 6, true);
        assert_eq!(exif_orientation(&cut[..20]), 1);
        assert_eq!(exif_orientation(b"\xFF\xD8\xFF\xE1\xFF\xFF"), 1);
    }

    #[cfg(feature = "image")]
    #[test]
    fn a_sideways_photo_is_planned_and_rendered_upright() {
        use std::io::Cursor;

        // 40x20, left half red, right half blue, stored sideways: EXIF 6 (turn 90° clockwise).
        let img = image::RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .expect("encode");
        let photo = with_orientation(&jpeg.into_inner(), 6, false);

        let plan = Plan {
            width: 10,
            height: 20,
            method: Method::Scale,
        };
        let job = decide(&photo, plan, false)
            .expect("decide")
            .expect("a render");
        // Upright it is 20x40, so it fits a 10x20 box exactly.
        assert_eq!((job.full_width, job.full_height), (20, 40));
        assert_eq!((job.width, job.height), (10, 20));
        let out = render_with_image(&job).expect("render");
        let thumb = image::load_from_memory(&out).expect("decodable").to_rgb8();
        assert_eq!(thumb.dimensions(), (10, 20));
        // Turned clockwise, the left (red) half is on top.
        let top = thumb.get_pixel(5, 3);
        let bottom = thumb.get_pixel(5, 16);
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    }
}
