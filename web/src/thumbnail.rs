//! Thumbnails drawn by the browser: `createImageBitmap` decodes, crops and resizes, an
//! `OffscreenCanvas` encodes. Both exist in pages and workers alike. Doing this here instead of
//! in Rust keeps the image codecs out of the wasm.

use hearth_core::thumbnail::{Output, Render, RenderError};
use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, BlobPropertyBag, ImageBitmap, ImageBitmapOptions, ImageEncodeOptions, OffscreenCanvas,
    OffscreenCanvasRenderingContext2d, ResizeQuality,
};

#[wasm_bindgen]
extern "C" {
    /// `createImageBitmap(image, sx, sy, sw, sh, options)` on whatever global scope we run in.
    #[wasm_bindgen(js_name = createImageBitmap, catch)]
    fn create_image_bitmap(
        image: &Blob,
        sx: i32,
        sy: i32,
        sw: i32,
        sh: i32,
        options: &ImageBitmapOptions,
    ) -> Result<Promise, JsValue>;
}

fn failed(what: &str, e: JsValue) -> RenderError {
    let why = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    RenderError::Failed(format!("{what}: {why}"))
}

fn coord(v: u32) -> Result<i32, RenderError> {
    i32::try_from(v).map_err(|_| RenderError::Failed(format!("{v} is out of canvas range")))
}

pub async fn render(job: Render<'_>) -> Result<Vec<u8>, RenderError> {
    let parts = Array::of1(&Uint8Array::from(job.bytes));
    let kind = BlobPropertyBag::new();
    kind.set_type(job.format.content_type());
    let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &kind)
        .map_err(|e| failed("cannot hold the image", e))?;

    let options = ImageBitmapOptions::new();
    options.set_resize_width(job.width);
    options.set_resize_height(job.height);
    options.set_resize_quality(ResizeQuality::High);
    let s = job.source;
    let decoding = create_image_bitmap(
        &blob,
        coord(s.x)?,
        coord(s.y)?,
        coord(s.width)?,
        coord(s.height)?,
        &options,
    )
    .map_err(|e| failed("cannot decode the image", e))?;
    let bitmap: ImageBitmap = JsFuture::from(decoding)
        .await
        .map_err(|e| failed("cannot decode the image", e))?
        .unchecked_into();

    let canvas = OffscreenCanvas::new(job.width, job.height)
        .map_err(|e| failed("cannot make a canvas", e))?;
    let context: OffscreenCanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(|e| failed("cannot draw", e))?
        .ok_or_else(|| RenderError::Failed("no 2d context for the canvas".into()))?
        .unchecked_into();
    let drawn = context.draw_image_with_image_bitmap(&bitmap, 0.0, 0.0);
    // The decoded pixels are released now, not whenever the garbage collector runs.
    bitmap.close();
    drawn.map_err(|e| failed("cannot draw", e))?;

    let encode = ImageEncodeOptions::new();
    encode.set_type(job.output.content_type());
    if job.output == Output::Jpeg {
        encode.set_quality(f64::from(Output::JPEG_QUALITY) / 100.0);
    }
    let encoding = canvas
        .convert_to_blob_with_options(&encode)
        .map_err(|e| failed("cannot encode", e))?;
    let out: Blob = JsFuture::from(encoding)
        .await
        .map_err(|e| failed("cannot encode", e))?
        .unchecked_into();
    let buffer = JsFuture::from(out.array_buffer())
        .await
        .map_err(|e| failed("cannot read the encoded thumbnail", e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}
