//! TEMPORARY stand-in, replaced by the fast_image_resize kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stretch,
    Crop,
    Pad,
}
#[derive(Debug, thiserror::Error)]
#[error("resize failed")]
pub struct ResizeError;
#[allow(clippy::too_many_arguments)]
pub fn resize_rgb8(
    src: &[u8],
    sw: u32,
    sh: u32,
    dst_w: u32,
    dst_h: u32,
    filter: Filter,
    _mode: Mode,
    _fill: [u8; 3],
) -> Result<Vec<u8>, ResizeError> {
    let img = image::RgbImage::from_raw(sw, sh, src.to_vec()).ok_or(ResizeError)?;
    let f = match filter {
        Filter::Nearest => image::imageops::FilterType::Nearest,
        Filter::Bilinear => image::imageops::FilterType::Triangle,
        Filter::Bicubic => image::imageops::FilterType::CatmullRom,
        Filter::Lanczos3 => image::imageops::FilterType::Lanczos3,
    };
    Ok(image::imageops::resize(&img, dst_w, dst_h, f).into_raw())
}
