//! Decoding of untrusted JPEG/PNG bytes into one plain pixel layout: RGB8, HWC.
//!
//! Why: every later stage (resize, normalisation, writing tensors) wants a single
//! layout, and dataset files are untrusted input, so decoding must fail with a
//! clear reason instead of panicking or exhausting memory.
//!
//! Rules:
//! * The format is guessed from the content (magic bytes), never from a file
//!   name. Only JPEG and PNG are accepted; anything else is an error.
//! * Width, height and pixel count are read from the header and checked against
//!   [`DecodeLimits`] *before* the pixel buffer is allocated. The limits apply to
//!   the dimensions as stored in the file (before EXIF rotation). The `image`
//!   crate's own [`image::Limits`] are set as well (same width/height, plus an
//!   allocation budget of 8 bytes per allowed pixel) as a second line of defence.
//! * The EXIF orientation is applied, so the output is upright as a photo viewer
//!   shows it (a 90° rotation swaps width and height). This covers JPEG APP1
//!   Exif and, since the `image` crate reads it too, PNG `eXIf`. An unreadable
//!   EXIF block is ignored rather than failing the image.
//! * Grayscale becomes RGB by replicating the gray value; alpha is dropped
//!   without compositing (like Pillow's `convert("RGB")` and OpenCV's
//!   `IMREAD_COLOR`); 16-bit samples become 8-bit through the `image` crate's
//!   conversion (`to_rgb8`); palette PNGs are expanded.
//! * No panics on any input: every failure is a [`DecodeError`]. Truncated
//!   pixel data is an error; a PNG missing only its `IEND` trailer still decodes.
//!   A JPEG must reach its end-of-image marker (`EOI`): one that stops before it
//!   is refused, as Pillow refuses it (OpenCV would fill the rest with grey), so
//!   no half image is ever used ([`jpeg_markers`]).
//! * Application segments and comments a Rust decoder refuses but libjpeg skips
//!   (a short Adobe APP14, say) do not make a JPEG unusable: it is decoded again
//!   without them.

use std::fmt;
use std::io::{Cursor, ErrorKind};

use image::error::ImageError;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::data::jpeg_markers::{self, Walk};

/// A decoded image: 8-bit RGB, row-major HWC, `pixels.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl fmt::Debug for Rgb8Image {
    /// Prints the size only: the pixel data is too long to be useful in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rgb8Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pixels", &format_args!("[{} bytes]", self.pixels.len()))
            .finish()
    }
}

/// Upper bounds on the size of an image accepted by [`decode_rgb8`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Maximum width in pixels, as stored in the file.
    pub max_width: u32,
    /// Maximum height in pixels, as stored in the file.
    pub max_height: u32,
    /// Maximum `width * height`.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 20 000 x 20 000 and 100 megapixels: far above any training image, far
    /// below what would exhaust memory on a typical worker (RGB8 ≤ 300 MB).
    fn default() -> Self {
        Self {
            max_width: 20_000,
            max_height: 20_000,
            max_pixels: 100_000_000,
        }
    }
}

/// Why an image could not be decoded. Each message is one line for end users.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input has no bytes at all.
    #[error("empty file: 0 bytes, not an image")]
    Empty,
    /// The content matches no known image signature.
    #[error("unrecognised image format: the data is not a JPEG or PNG file")]
    UnknownFormat,
    /// A known image format, but not one this tool accepts.
    #[error("unsupported image format {format}: only JPEG and PNG are accepted")]
    UnsupportedFormat { format: String },
    /// A JPEG/PNG using a feature the decoder does not implement.
    #[error("unsupported {format} variant: {message}")]
    UnsupportedFeature { format: &'static str, message: String },
    /// The data is truncated or malformed; `message` is the decoder's reason.
    #[error("corrupt {format} data: {message}")]
    Corrupt { format: &'static str, message: String },
    /// The header announces an image larger than the [`DecodeLimits`].
    #[error(
        "image too large: {width}x{height} ({pixels} pixels) exceeds the limit of \
         {max_width}x{max_height} and {max_pixels} pixels"
    )]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        max_width: u32,
        max_height: u32,
        max_pixels: u64,
    },
    /// Decoding would need more memory than the allocation budget allows.
    #[error("{format} image needs more memory than allowed: {message}")]
    MemoryLimit { format: &'static str, message: String },
}

/// Decodes a JPEG or PNG file's bytes into an upright RGB8 image.
///
/// See the [module documentation](self) for the exact rules.
///
/// # Errors
/// [`DecodeError`] describing why the bytes are not an acceptable image.
pub fn decode_rgb8(bytes: &[u8], limits: &DecodeLimits) -> Result<Rgb8Image, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    // `FF D8` alone is the start of a JPEG (cut short), which `guess_format` does not know.
    let guessed = image::guess_format(bytes).or_else(|e| {
        if bytes.starts_with(&[0xFF, 0xD8]) {
            Ok(ImageFormat::Jpeg)
        } else {
            Err(e)
        }
    });
    let (format, name) = match guessed {
        Ok(ImageFormat::Jpeg) => (ImageFormat::Jpeg, "JPEG"),
        Ok(ImageFormat::Png) => (ImageFormat::Png, "PNG"),
        Ok(other) => {
            return Err(DecodeError::UnsupportedFormat {
                format: other
                    .extensions_str()
                    .first()
                    .map_or_else(|| format!("{other:?}"), |ext| ext.to_ascii_uppercase()),
            });
        }
        Err(_) => return Err(DecodeError::UnknownFormat),
    };
    if format == ImageFormat::Jpeg {
        match jpeg_markers::walk(bytes) {
            Walk::Truncated { at } => {
                return Err(DecodeError::Corrupt {
                    format: name,
                    message: format!(
                        "the file is truncated: its {at} bytes end before the image does (no end-of-image marker)"
                    ),
                });
            }
            Walk::Complete { segments } => {
                if let Some(coding) = jpeg_markers::unsupported_coding(bytes, &segments) {
                    return Err(DecodeError::UnsupportedFeature {
                        format: name,
                        message: coding,
                    });
                }
            }
        }
        if let Some(img) = decode_jpeg_direct(bytes, limits) {
            return Ok(img);
        }
    }
    let first = decode_with_image(bytes, format, name, limits);
    // libjpeg (Pillow, OpenCV) skips application segments and comments it cannot read, and
    // Pillow reads past a PNG critical chunk nobody knows and a wrong CRC on image data; the
    // Rust decoders refuse them: decode once more as the reference decoders read the file.
    let cleaned = match (&first, format) {
        (Err(DecodeError::Corrupt { .. } | DecodeError::UnsupportedFeature { .. }), ImageFormat::Jpeg) => {
            jpeg_markers::without_skippable_segments(bytes)
        }
        (Err(DecodeError::Corrupt { .. }), ImageFormat::Png) => crate::data::png_chunks::as_pillow_reads_it(bytes),
        _ => None,
    };
    match cleaned {
        Some(cleaned) => decode_with_image(&cleaned, format, name, limits).or(first),
        None => first,
    }
}

/// [`decode_rgb8`] through the `image` crate, once the format is known.
fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    name: &'static str,
    limits: &DecodeLimits,
) -> Result<Rgb8Image, DecodeError> {
    let to_error = |err| decode_error(err, name);

    // Phase 1: parse the header only. Dimension limits are left to our own check
    // below so the error can name the actual size; the allocation budget applies.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut budget = image::Limits::default();
    budget.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(budget.clone());
    let mut decoder = reader.into_decoder().map_err(to_error)?;

    let (width, height) = decoder.dimensions();
    check_limits(width, height, limits)?;
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt {
            format: name,
            message: format!("the header declares an empty {width}x{height} image"),
        });
    }

    // Phase 2: full limits (strict dimensions + budget minus the output buffer),
    // exactly like `ImageReader::decode`, then decode.
    budget.max_image_width = Some(limits.max_width);
    budget.max_image_height = Some(limits.max_height);
    budget.reserve(decoder.total_bytes()).map_err(to_error)?;
    decoder.set_limits(budget).map_err(to_error)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);

    let image = DynamicImage::from_decoder(decoder).map_err(to_error)?;
    Ok(upright_rgb8(image, orientation))
}

/// The version tag of the JPEG decoding used by [`decode_rgb8_for`], for fingerprints:
/// decoders differ by a few levels per pixel, so a change of decoder or of the scaling rule
/// must change every artifact made with it.
pub const SCALED_JPEG_DECODER: &str = "jpeg-decoder 0.3 DCT-scaled 1/4 at 8x the target, else zune-jpeg 0.5";

/// Like [`decode_rgb8`], but a JPEG at least 8 times larger than `target` (width, height,
/// upright) on both sides is decoded in the DCT domain at 1/4 scale, so the reduced image is
/// still at least twice the target on each side, Pillow's `reducing_gap` rule (`draft` as
/// `Image.thumbnail` uses it; OpenCV's `IMREAD_REDUCED_COLOR_4`): most of the inverse DCT,
/// upsampling and colour conversion work is skipped, and the resize after it has a
/// sixteenth of the pixels to read, while the result stays as close to a full decode as
/// Pillow's reduced decode is (`bench/jpeg_fidelity.py`). Reducing further than twice the
/// target left the resize too few pixels (a 128x128 JPEG to 32x32 came out 7 levels off on
/// average); `jpeg-decoder`'s 1/8 scale rounds its DC half a level low and its 1/2 scale is
/// slower than `zune-jpeg`'s full decode, so neither is used. Anything else (PNG, CMYK,
/// 16-bit, a decode error) goes through [`decode_rgb8`], so errors are always its errors.
pub fn decode_rgb8_for(bytes: &[u8], limits: &DecodeLimits, target: (u32, u32)) -> Result<Rgb8Image, DecodeError> {
    if image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg)
        && let Some(img) = decode_jpeg_scaled(bytes, limits, target)
    {
        return Ok(img);
    }
    decode_rgb8(bytes, limits)
}

/// The DCT-scaled path of [`decode_rgb8_for`]; `None` when it does not apply or fails.
fn decode_jpeg_scaled(bytes: &[u8], limits: &DecodeLimits, target: (u32, u32)) -> Option<Rgb8Image> {
    use jpeg_decoder::PixelFormat;
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if !matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8) || check_limits(w, h, limits).is_err() {
        return None;
    }
    let orientation = decoder
        .exif_data()
        .map(|d| d.strip_prefix(b"Exif\0\0").unwrap_or(d))
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    // The target as stored in the file (a quarter turn swaps the sides).
    let swaps = matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    );
    let (tw, th) = if swaps { (target.1, target.0) } else { target };
    // Pillow's `reducing_gap` rule (`Image.thumbnail`, `draft`): the reduced image is still
    // at least twice the target on each side, so the resize after it does the rest.
    // 1/4 only: jpeg-decoder's 1/8 path (DC only) truncates where libjpeg rounds, half a
    // level low in Y, Cb and Cr, so a red or blue channel came out a level low on average.
    let k = 4u32;
    if w / (2 * tw.max(1)) < k || h / (2 * th.max(1)) < k {
        return None;
    }
    let (sw, sh) = decoder
        .scale(u16::try_from(w.div_ceil(k)).ok()?, u16::try_from(h.div_ceil(k)).ok()?)
        .ok()?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    if sw < tw || sh < th || sw * k > w + k || sh * k > h + k {
        return None;
    }
    // A truncated file goes to `decode_rgb8`, which refuses it; the walk is made only for
    // files this path decodes, so every JPEG is walked once.
    if !matches!(jpeg_markers::walk(bytes), Walk::Complete { .. }) {
        return None;
    }
    let raw = decoder.decode().ok()?;
    let pixels = match info.pixel_format {
        PixelFormat::L8 if raw.len() == (sw * sh) as usize => raw.iter().flat_map(|&v| [v, v, v]).collect(),
        PixelFormat::RGB24 if raw.len() == (sw * sh * 3) as usize => raw,
        _ => return None,
    };
    upright(sw, sh, pixels, orientation)
}

/// RGB8 pixels as stored in the file, turned upright by the EXIF `orientation`.
fn upright(width: u32, height: u32, pixels: Vec<u8>, orientation: Orientation) -> Option<Rgb8Image> {
    if orientation == Orientation::NoTransforms {
        return Some(Rgb8Image { width, height, pixels });
    }
    let image = DynamicImage::ImageRgb8(image::RgbImage::from_raw(width, height, pixels)?);
    Some(upright_rgb8(image, orientation))
}

/// A decoded image of any colour type, turned upright by the EXIF `orientation` and
/// converted to RGB8 (gray replicated, alpha dropped, 16-bit samples scaled): the tail the
/// `image` path and the direct JPEG paths ([`upright`]) share.
fn upright_rgb8(mut image: DynamicImage, orientation: Orientation) -> Rgb8Image {
    image.apply_orientation(orientation);
    let rgb = image.into_rgb8();
    let (width, height) = rgb.dimensions();
    Rgb8Image {
        width,
        height,
        pixels: rgb.into_raw(),
    }
}

/// A 3-component JPEG straight through `zune-jpeg`, the decoder the `image` crate wraps:
/// the same pixels, without the wrapper's copy of the input, its three header parses and
/// its copy of the output (about 8% of a decode-and-resize to 224x224). `None` for anything
/// else and on any error, which the `image` path then decodes or reports in its words.
fn decode_jpeg_direct(bytes: &[u8], limits: &DecodeLimits) -> Option<Rgb8Image> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(limits.max_width as usize)
        .set_max_height(limits.max_height as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().ok()?;
    let (w, h) = decoder.dimensions()?;
    let (w, h) = (u32::try_from(w).ok()?, u32::try_from(h).ok()?);
    if check_limits(w, h, limits).is_err()
        || w == 0
        || h == 0
        || !matches!(decoder.input_colorspace()?, ColorSpace::YCbCr | ColorSpace::RGB)
    {
        return None;
    }
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(ColorSpace::RGB));
    let orientation = decoder
        .exif()
        .and_then(|e| Orientation::from_exif_chunk(e))
        .unwrap_or(Orientation::NoTransforms);
    let pixels = decoder.decode().ok()?;
    if pixels.len() != (w as usize) * (h as usize) * 3 {
        return None;
    }
    upright(w, h, pixels, orientation)
}

/// Rejects `width x height` if it exceeds any of `limits` (also for pixels decoded elsewhere,
/// which the Python package takes).
pub fn check_limits(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_width || height > limits.max_height || pixels > limits.max_pixels {
        return Err(DecodeError::TooLarge {
            width,
            height,
            pixels,
            max_width: limits.max_width,
            max_height: limits.max_height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// Maps an `image` crate error to the user-facing category.
fn decode_error(err: ImageError, format: &'static str) -> DecodeError {
    match err {
        ImageError::Limits(e) => DecodeError::MemoryLimit {
            format,
            message: one_line(&e),
        },
        ImageError::Unsupported(e) => DecodeError::UnsupportedFeature {
            format,
            message: one_line(&e),
        },
        ImageError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => DecodeError::Corrupt {
            format,
            message: "the file is truncated (unexpected end of data)".to_owned(),
        },
        other => DecodeError::Corrupt {
            format,
            message: one_line(&other),
        },
    }
}

/// What a user should know of a JPEG that decoded: its EXIF block cannot be read (or names
/// no orientation there is), so its orientation is ignored, as Pillow (with a warning) and
/// OpenCV do. `None` for a readable block, no block, or a PNG.
pub fn exif_note(bytes: &[u8]) -> Option<String> {
    let Walk::Complete { segments } = jpeg_markers::header(bytes) else {
        return None;
    };
    let tiff = segments.iter().find_map(|&(marker, offset, len)| {
        let payload = bytes.get(offset + 4..offset + len)?;
        (marker == 0xE1).then(|| payload.strip_prefix(b"Exif\0\0")).flatten()
    })?;
    let ignored = "so its orientation is ignored (as Pillow and OpenCV do)";
    let Some(entries) = exif_ifd0(tiff) else {
        return Some(format!("its EXIF block cannot be read, {ignored}"));
    };
    match entries.into_iter().find(|(tag, _)| *tag == 0x0112) {
        Some((_, value)) if !(1..=8).contains(&value) => {
            Some(format!("its EXIF orientation is {value}, not one of 1 to 8, {ignored}"))
        }
        _ => None,
    }
}

/// The (tag, first 16-bit value) pairs of a TIFF block's first IFD, or `None` when its
/// header or IFD does not fit in it.
fn exif_ifd0(tiff: &[u8]) -> Option<Vec<(u16, u16)>> {
    let big = match tiff.get(..4)? {
        b"MM\0*" => true,
        b"II*\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let b: [u8; 4] = tiff.get(4..8)?.try_into().ok()?;
    let ifd = if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    } as usize;
    let count = usize::from(u16_at(ifd)?);
    (0..count)
        .map(|i| {
            let entry = ifd.checked_add(2 + 12 * i)?;
            Some((u16_at(entry)?, u16_at(entry + 8)?))
        })
        .collect()
}

/// Width and height as an image file's header states them (before EXIF rotation), without
/// decoding its pixels: what `pipeline init` reports of a folder. The error is one line.
pub fn header_dimensions(path: &std::path::Path) -> Result<(u32, u32), String> {
    ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| one_line(&e))?
        .into_dimensions()
        .map_err(|e| one_line(&e))
}

/// A decoder's message as one plain sentence: on one line (some contain newlines), without
/// the `image` crate's "Format error decoding Png:" preamble (the error says the format),
/// without Rust debug text (`ChunkType { type: IHDR, critical: true, … }` becomes `IHDR`, a
/// trailing `InvalidBlockType` becomes "invalid block type"), quotes or a final full stop.
fn one_line(message: &impl fmt::Display) -> String {
    let mut text = message.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    for preamble in [
        "Format error decoding Png: ",
        "Format error decoding Jpeg: ",
        "Format error: ",
    ] {
        if let Some(rest) = text.strip_prefix(preamble) {
            text = rest.to_string();
        }
    }
    const CHUNK: &str = "ChunkType { type: ";
    while let Some(at) = text.find(CHUNK) {
        let rest = &text[at + CHUNK.len()..];
        let name: String = rest.chars().take_while(char::is_ascii_alphanumeric).collect();
        let end = rest.find('}').map_or(text.len(), |e| at + CHUNK.len() + e + 1);
        text.replace_range(at..end, &name);
    }
    // A debug enum variant at the end, after a sentence: its words.
    if let Some((head, last)) = text.rsplit_once(". ")
        && last.len() > 1
        && last.chars().all(|c| c.is_ascii_alphabetic())
        && last.starts_with(|c: char| c.is_ascii_uppercase())
        && last.chars().skip(1).any(|c| c.is_ascii_uppercase())
    {
        let mut words = String::new();
        for (i, c) in last.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                words.push(' ');
            }
            words.push(c.to_ascii_lowercase());
        }
        text = format!("{head} ({words})");
    }
    let text = text.trim().trim_matches('"').trim_end_matches('.').trim();
    let mut chars = text.chars();
    match chars.next() {
        // "Unknown filter method" reads on after "corrupt PNG data: " in lower case; an
        // acronym ("IDAT or fdAT chunk is missing") keeps its case.
        Some(first) if chars.next().is_some_and(|c| c.is_ascii_lowercase()) => {
            first.to_lowercase().chain(text.chars().skip(1)).collect()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    /// Test-only allocator that remembers the largest single allocation made by
    /// the current thread, to prove that oversized images are rejected before
    /// their pixel buffer is allocated.
    mod alloc_probe {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Probe;

        thread_local! {
            static LARGEST: Cell<usize> = const { Cell::new(0) };
        }

        // SAFETY: delegates every operation to `System` unchanged.
        unsafe impl GlobalAlloc for Probe {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc(layout) }
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc_zeroed(layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
                // SAFETY: same contract as the caller's.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: same contract as the caller's.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        /// Runs `f` and returns its result with the largest allocation it made.
        pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
            LARGEST.with(|m| m.set(0));
            let out = f();
            (out, LARGEST.with(Cell::get))
        }
    }

    #[global_allocator]
    static PROBE: alloc_probe::Probe = alloc_probe::Probe;

    fn encode_png(pixels: &[u8], w: u32, h: u32, color: ExtendedColorType) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(pixels, w, h, color)
            .unwrap();
        out
    }

    /// An 8x4 JPEG whose left half is red and right half blue.
    fn red_blue_jpeg() -> Vec<u8> {
        let (w, h) = (8u32, 4u32);
        let pixels: Vec<u8> = (0..h)
            .flat_map(|_| (0..w).flat_map(|x| if x < 4 { [255, 0, 0] } else { [0, 0, 255] }))
            .collect();
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 95)
            .encode(&pixels, w, h, ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// `jpeg` with an APP1 Exif segment (big-endian TIFF, one IFD0 entry:
    /// Orientation = `orientation`) inserted right after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a"); // big-endian TIFF magic
        tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // tag: Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // type: SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let payload_len = 2 + 6 + tiff.len(); // length field + "Exif\0\0" + TIFF
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
        out.extend_from_slice(b"Exif\0\0");
        out.extend_from_slice(&tiff);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG whose IHDR claims `w x h` RGB8, followed by a tiny IDAT and IEND.
    fn png_with_header(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, filter 0, no interlace
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Rgb8Image, DecodeError> {
        decode_rgb8(bytes, &DecodeLimits::default())
    }

    #[test]
    fn rgb_png_round_trips() {
        let pixels: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 5) as u8).collect();
        let img = decode(&encode_png(&pixels, 5, 3, ExtendedColorType::Rgb8)).unwrap();
        assert_eq!((img.width, img.height), (5, 3));
        assert_eq!(img.pixels, pixels);
    }

    #[test]
    fn grayscale_png_becomes_rgb_with_equal_channels() {
        let gray: Vec<u8> = (0..6 * 4).map(|i| (i * 10) as u8).collect();
        let img = decode(&encode_png(&gray, 6, 4, ExtendedColorType::L8)).unwrap();
        assert_eq!((img.width, img.height, img.pixels.len()), (6, 4, 6 * 4 * 3));
        for (px, &g) in img.pixels.chunks_exact(3).zip(&gray) {
            assert_eq!(px, [g, g, g]);
        }
    }

    #[test]
    fn rgba_png_drops_alpha() {
        // Alpha is discarded, not composited: a transparent pixel keeps its colour.
        let rgba = [10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255];
        let img = decode(&encode_png(&rgba, 3, 1, ExtendedColorType::Rgba8)).unwrap();
        assert_eq!(img.pixels, [10, 20, 30, 40, 50, 60, 70, 80, 90]);
    }

    #[test]
    fn sixteen_bit_png_becomes_eight_bit() {
        let samples: [u16; 3] = [0, 0x8080, 0xffff];
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_ne_bytes()).collect();
        let img = decode(&encode_png(&bytes, 1, 1, ExtendedColorType::Rgb16)).unwrap();
        assert_eq!(img.pixels, [0, 0x80, 0xff]);
    }

    #[test]
    fn jpeg_without_exif_keeps_orientation() {
        let img = decode(&red_blue_jpeg()).unwrap();
        assert_eq!((img.width, img.height), (8, 4));
    }

    #[test]
    fn jpeg_exif_orientation_6_is_rotated() {
        // Orientation 6: the stored image must be rotated 90° clockwise for
        // display, so the left (red) half ends up on top.
        let img = decode(&with_exif_orientation(&red_blue_jpeg(), 6)).unwrap();
        assert_eq!((img.width, img.height), (4, 8));
        let px = |x: u32, y: u32| {
            let i = ((y * img.width + x) * 3) as usize;
            [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
        };
        let top = px(2, 1);
        let bottom = px(2, 6);
        assert!(top[0] > 200 && top[2] < 60, "top should be red, got {top:?}");
        assert!(
            bottom[2] > 200 && bottom[0] < 60,
            "bottom should be blue, got {bottom:?}"
        );
    }

    /// A `w x h` JPEG with detail in every block (seeded texture).
    fn textured_jpeg(w: u32, h: u32) -> Vec<u8> {
        let pixels: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) % 97 + (i / 3 % w) % 128) as u8)
            .collect();
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90)
            .encode(&pixels, w, h, ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn a_jpeg_is_reduced_only_while_it_stays_twice_the_target() {
        let limits = DecodeLimits::default();
        // Pillow's reducing_gap rule: 1/4 of 256 is 64, twice a 32 target: reduced.
        let big = decode_rgb8_for(&textured_jpeg(256, 200), &limits, (32, 25)).unwrap();
        assert_eq!((big.width, big.height), (64, 50));
        // 1/4 of 128 is 32, the target itself: decoded whole (the old rule reduced it).
        let whole = decode_rgb8_for(&textured_jpeg(128, 128), &limits, (32, 32)).unwrap();
        assert_eq!(whole, decode(&textured_jpeg(128, 128)).unwrap());
        // One side short of 8x the target: decoded whole.
        let wide = decode_rgb8_for(&textured_jpeg(512, 200), &limits, (32, 32)).unwrap();
        assert_eq!((wide.width, wide.height), (512, 200));
        // Never 1/8 (its DC rounds half a level low): 1/4 however large the reduction.
        let huge = decode_rgb8_for(&textured_jpeg(1024, 1024), &limits, (16, 16)).unwrap();
        assert_eq!((huge.width, huge.height), (256, 256));
    }

    #[test]
    fn an_unreadable_exif_block_is_noted_and_ignored() {
        let jpeg = red_blue_jpeg();
        assert_eq!(exif_note(&jpeg), None);
        assert_eq!(exif_note(&with_exif_orientation(&jpeg, 6)), None);
        let odd = exif_note(&with_exif_orientation(&jpeg, 9)).unwrap();
        assert!(odd.starts_with("its EXIF orientation is 9, not one of 1 to 8"), "{odd}");
        // An IFD that claims more entries than the block holds.
        let mut broken = jpeg[..2].to_vec();
        broken.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x12]);
        broken.extend_from_slice(b"Exif\0\0II*\0\x08\0\0\0\x40\0");
        broken.extend_from_slice(&jpeg[2..]);
        let note = exif_note(&broken).unwrap();
        assert!(note.starts_with("its EXIF block cannot be read"), "{note}");
        // Still decoded, upright as stored.
        assert_eq!(decode(&broken).map(|i| (i.width, i.height)).unwrap(), (8, 4));
    }

    #[test]
    fn decoder_messages_become_plain_sentences() {
        let cases = [
            (
                "Format error decoding Png: CRC error: expected 0x5c06e38 have 0xfac06e38 while decoding \
                 ChunkType { type: IHDR, critical: true, private: false, reserved: false, safecopy: false } chunk.",
                "CRC error: expected 0x5c06e38 have 0xfac06e38 while decoding IHDR chunk",
            ),
            (
                "Format error decoding Png: Corrupt deflate stream. InvalidBlockType",
                "corrupt deflate stream (invalid block type)",
            ),
            (
                "Format error decoding Jpeg: \"Premature End of image\"",
                "premature End of image",
            ),
            (
                "Format error decoding Png: Unknown filter method 255.",
                "unknown filter method 255",
            ),
            ("IDAT or fdAT chunk is missing.", "IDAT or fdAT chunk is missing"),
        ];
        for (raw, plain) in cases {
            assert_eq!(one_line(&raw), plain);
        }
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(decode(b"hello, world\n"), Err(DecodeError::UnknownFormat)));
        assert!(matches!(decode(&[0; 64]), Err(DecodeError::UnknownFormat)));
        assert!(matches!(
            decode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00"),
            Err(DecodeError::UnsupportedFormat { .. })
        ));
        // Signature only.
        assert!(matches!(decode(b"\x89PNG\r\n\x1a\n"), Err(DecodeError::Corrupt { .. })));
        assert!(matches!(decode(&[0xff, 0xd8, 0xff]), Err(DecodeError::Corrupt { .. })));
    }

    #[test]
    fn truncated_files_are_errors() {
        let pixels: Vec<u8> = (0..16 * 16 * 3).map(|i| (i * 31 % 251) as u8).collect();
        let png = encode_png(&pixels, 16, 16, ExtendedColorType::Rgb8);
        let jpeg = red_blue_jpeg();
        let err = decode(&png[..png.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { format: "PNG", .. }), "{err}");
        // Every cut into the pixel data is an error. (A PNG missing only its
        // 12-byte IEND chunk still decodes, as does a JPEG missing only EOI.)
        for cut in 1..png.len() - 12 {
            assert!(decode(&png[..cut]).is_err(), "PNG cut at {cut}");
        }
        for cut in 1..jpeg.len() {
            let _ = decode(&jpeg[..cut]);
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Deterministic byte flips over valid files; any Ok/Err is fine, a panic is not.
        let pixels: Vec<u8> = (0..12 * 9 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let inputs = [
            encode_png(&pixels, 12, 9, ExtendedColorType::Rgb8),
            with_exif_orientation(&red_blue_jpeg(), 6),
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for input in &inputs {
            for _ in 0..300 {
                let mut bytes = input.clone();
                for _ in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = (state % bytes.len() as u64) as usize;
                    bytes[i] = (state >> 32) as u8;
                }
                if let Ok(img) = decode(&bytes) {
                    assert_eq!(img.pixels.len(), (img.width * img.height * 3) as usize);
                }
            }
        }
    }

    #[test]
    fn huge_png_header_is_rejected_before_allocating() {
        let bytes = png_with_header(30_000, 30_000);
        let (result, largest) = alloc_probe::largest_allocation(|| decode(&bytes));
        match result {
            Err(
                e @ DecodeError::TooLarge {
                    width: 30_000,
                    height: 30_000,
                    ..
                },
            ) => {
                let msg = e.to_string();
                assert!(msg.contains("30000x30000") && msg.contains("20000x20000"), "{msg}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(largest < 1 << 20, "allocated {largest} bytes for a rejected image");
    }

    #[test]
    fn huge_jpeg_header_is_rejected() {
        // Patch the SOF0 frame header of a real JPEG to claim 30000x30000.
        let mut jpeg = red_blue_jpeg();
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("baseline JPEG has SOF0");
        // FFC0, length(2), precision(1), height(2), width(2)
        jpeg[sof + 5..sof + 7].copy_from_slice(&30_000u16.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&30_000u16.to_be_bytes());
        let (result, largest) = alloc_probe::largest_allocation(|| decode(&jpeg));
        assert!(
            matches!(
                result,
                Err(DecodeError::TooLarge {
                    width: 30_000,
                    height: 30_000,
                    ..
                })
            ),
            "{result:?}"
        );
        assert!(largest < 1 << 20, "allocated {largest} bytes for a rejected image");
    }

    #[test]
    fn custom_limits_apply() {
        let png = encode_png(&[0; 8 * 4 * 3], 8, 4, ExtendedColorType::Rgb8);
        let tight = |max_width, max_height, max_pixels| DecodeLimits {
            max_width,
            max_height,
            max_pixels,
        };
        assert!(decode_rgb8(&png, &tight(8, 4, 32)).is_ok());
        for limits in [tight(7, 100, 1000), tight(100, 3, 1000), tight(100, 100, 31)] {
            let err = decode_rgb8(&png, &limits).unwrap_err();
            assert!(matches!(err, DecodeError::TooLarge { .. }), "{limits:?}: {err}");
        }
    }

    #[test]
    fn error_messages_are_single_lines() {
        let errors = [
            decode(&[]).unwrap_err(),
            decode(b"text").unwrap_err(),
            decode(&png_with_header(30_000, 30_000)).unwrap_err(),
            decode(&[0xff, 0xd8, 0xff, 0xe0]).unwrap_err(),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
        }
    }
}
