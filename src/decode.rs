//! TEMPORARY stand-in, replaced by the real decoder.
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_pixels: u64,
}
impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 100_000_000,
        }
    }
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);
pub fn decode_rgb8(bytes: &[u8], limits: &DecodeLimits) -> Result<Rgb8Image, DecodeError> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| DecodeError(e.to_string()))?
        .to_rgb8();
    if u64::from(img.width()) * u64::from(img.height()) > limits.max_pixels {
        return Err(DecodeError("too large".into()));
    }
    Ok(Rgb8Image {
        width: img.width(),
        height: img.height(),
        pixels: img.into_raw(),
    })
}
