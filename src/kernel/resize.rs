//! Pure RGB8 resize kernel (no I/O), numerically compatible with Pillow.
//!
//! Why: models trained on images preprocessed with Pillow are sensitive to the
//! exact resampling, so `pipeline` must reproduce `PIL.Image.resize` rather than
//! "some" good-looking resize. For [`Mode::Stretch`] every output value is within
//! ±1 of Pillow's `Image.resize((w, h), filter)`, and [`Mode::Crop`] likewise
//! matches `ImageOps.fit` (checked against Pillow fixtures in
//! `tests/fixtures/resize`, built by `tools/make_resize_fixtures.py`).
//!
//! How each filter is computed, and why:
//! * [`Filter::Bilinear`], [`Filter::Bicubic`]: `fast_image_resize` convolution
//!   (SIMD, 3-5x faster than the port below). Its kernels, windows and 8-bit
//!   rounding follow Pillow-SIMD, but the two engines store the intermediate
//!   image (after the first pass) as rounded, clipped u8, so the *order* of the
//!   passes shows wherever an overshooting kernel meets a hard edge (up to 19
//!   levels off on the fixtures when the order was wrong). `fast_image_resize`
//!   always goes vertical-first for u8; Pillow 13 goes horizontal-first unless
//!   the height shrinks by more than twice as many pixels as the width (see
//!   `pillow_horizontal_first`). When the orders differ, the two passes are
//!   run as two single-axis resizes in Pillow's order. What remains is ±1 from
//!   `fast_image_resize`'s 15-bit (i16) coefficients versus Pillow's 22-bit ones.
//! * [`Filter::Lanczos3`]: a port of Pillow 13's `libImaging/Resample.c` (8-bit
//!   path: double-precision weights normalised to 22-bit fixed point, the same
//!   pass order and row bands). With `fast_image_resize`, Lanczos' large
//!   negative lobes amplify the ±1 intermediate differences to ±2.
//! * [`Filter::Nearest`]: a port of Pillow's `ImagingScaleAffine`
//!   (`libImaging/Geometry.c`), which is what `Image.resize(..., NEAREST)`
//!   runs. `fast_image_resize` computes the same positions by multiplication
//!   instead of repeated addition and picks the neighbouring pixel whenever the
//!   exact position is an integer (e.g. 32 -> 30 px: 70 levels off).
//! * The port is bit-exact against all Pillow 13.0.0 fixtures for every filter;
//!   moving Bilinear/Bicubic to it is a one-line change in `Filter::engine`.
//! * A `fast_image_resize::Resizer` and the intermediate buffer are kept per
//!   thread (`thread_local!`) and reused by every call on that thread, so the
//!   function is cheap to call per image from rayon workers.

use std::cell::RefCell;

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Resampling filter, named after (and matching) Pillow's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Pillow `NEAREST`: the source pixel under the centre of each output pixel.
    Nearest,
    /// Pillow `BILINEAR`: triangle filter, widened when downscaling.
    Bilinear,
    /// Pillow `BICUBIC`: Catmull-Rom cubic (`a = -0.5`), widened when downscaling.
    Bicubic,
    /// Pillow `LANCZOS`: windowed sinc with 3 lobes, widened when downscaling.
    Lanczos3,
}

/// How the source is mapped onto a target of a (possibly) different aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Resize the whole image to exactly the target size (aspect ratio may change).
    Stretch,
    /// Keep the aspect ratio and fill the target: take the largest centred source
    /// window with the target's aspect ratio (sub-pixel, like Pillow's
    /// `ImageOps.fit(img, size, method, centering=(0.5, 0.5))`) and resize it.
    /// As in Pillow, kernels near the window's edge may read the source pixels
    /// just outside it.
    Crop,
    /// Keep the aspect ratio and fit inside the target (letterbox): the scaled
    /// image (rounded size, at least 1 px per side) is centred on a canvas of the
    /// fill colour. When the free space is odd, the extra pixel goes right/bottom.
    Pad,
}

/// Why a resize could not be performed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// The source has no pixels.
    #[error("cannot resize an empty image: source size is {width}x{height}")]
    EmptySource { width: u32, height: u32 },
    /// The requested output has no pixels.
    #[error("invalid target size {width}x{height}: both sides must be at least 1 pixel")]
    EmptyTarget { width: u32, height: u32 },
    /// The source slice length does not match `width * height * 3`.
    #[error("source buffer has {actual} bytes but a {width}x{height} RGB8 image needs exactly {expected}")]
    BufferSize {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    /// The output buffer cannot be sized or allocated.
    #[error("target size {width}x{height} is too large to allocate")]
    TooLarge { width: u32, height: u32 },
    /// `fast_image_resize` rejected the request (indicates a bug in this module).
    #[error("internal resize error: {0}")]
    Backend(String),
}

/// Per-thread resize state, reused across calls so steady-state resizing does
/// not allocate scratch memory.
#[derive(Default)]
struct Kernel {
    /// `fast_image_resize` state (CPU feature detection, convolution buffers).
    resizer: Resizer,
    /// Intermediate image between the horizontal and the vertical pass.
    scratch: Vec<u8>,
}

thread_local! {
    static KERNEL: RefCell<Kernel> = RefCell::new(Kernel::default());
}

/// Which implementation runs a convolution filter. Only tests pick explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// `fast_image_resize`, passes reordered to match Pillow.
    Fir,
    /// Port of Pillow's `Resample.c`.
    Pillow,
}

impl Filter {
    /// The engine that meets the ±1 Pillow contract for this filter.
    fn engine(self) -> Engine {
        match self {
            Filter::Nearest | Filter::Lanczos3 => Engine::Pillow,
            Filter::Bilinear | Filter::Bicubic => Engine::Fir,
        }
    }
}

/// Resizes an RGB8 image.
///
/// `src` is RGB8, row-major HWC (`sw * sh * 3` bytes, no row padding). Returns
/// a new RGB8 HWC buffer of `dst_w * dst_h * 3` bytes. `fill` is the canvas
/// colour used only by [`Mode::Pad`].
///
/// In [`Mode::Stretch`], a source that already has the target size is returned
/// unchanged (as Pillow does).
///
/// # Errors
/// [`ResizeError`] if a size is zero, `src` has the wrong length, or the output
/// is too large to allocate. Never panics on bad input.
#[expect(
    clippy::too_many_arguments,
    reason = "flat signature shared with the main crate's call sites"
)]
pub fn resize_rgb8(
    src: &[u8],
    sw: u32,
    sh: u32,
    dst_w: u32,
    dst_h: u32,
    filter: Filter,
    mode: Mode,
    fill: [u8; 3],
) -> Result<Vec<u8>, ResizeError> {
    resize_with_engine(src, (sw, sh), (dst_w, dst_h), filter, filter.engine(), mode, fill)
}

/// [`resize_rgb8`] with an explicit engine for convolution filters.
fn resize_with_engine(
    src: &[u8],
    (sw, sh): (u32, u32),
    (dst_w, dst_h): (u32, u32),
    filter: Filter,
    engine: Engine,
    mode: Mode,
    fill: [u8; 3],
) -> Result<Vec<u8>, ResizeError> {
    if sw == 0 || sh == 0 {
        return Err(ResizeError::EmptySource { width: sw, height: sh });
    }
    if dst_w == 0 || dst_h == 0 {
        return Err(ResizeError::EmptyTarget {
            width: dst_w,
            height: dst_h,
        });
    }
    let expected = rgb8_len(sw, sh).ok_or(ResizeError::TooLarge { width: sw, height: sh })?;
    if src.len() != expected {
        return Err(ResizeError::BufferSize {
            width: sw,
            height: sh,
            expected,
            actual: src.len(),
        });
    }
    if mode == Mode::Stretch && (sw, sh) == (dst_w, dst_h) {
        return Ok(src.to_vec());
    }

    let src = Rgb8Ref {
        pixels: src,
        width: sw,
        height: sh,
    };
    let (window, rect, background) = match mode {
        Mode::Stretch => (SrcWindow::full(sw, sh), Rect::full(dst_w, dst_h), [0; 3]),
        Mode::Crop => (
            SrcWindow::centred_with_aspect(sw, sh, dst_w, dst_h),
            Rect::full(dst_w, dst_h),
            [0; 3],
        ),
        Mode::Pad => (SrcWindow::full(sw, sh), Rect::letterbox(sw, sh, dst_w, dst_h), fill),
    };
    let mut dst = Canvas::filled(dst_w, dst_h, background)?;
    KERNEL.with_borrow_mut(|kernel| match (filter, engine) {
        (Filter::Nearest, _) => {
            nearest_pillow(&src, window, &mut dst, rect);
            Ok(())
        }
        (_, Engine::Fir) => fir_convolve(&src, window, &mut dst, rect, filter, kernel),
        (_, Engine::Pillow) => pillow::convolve(&src, window, &mut dst, rect, filter, &mut kernel.scratch),
    })?;
    Ok(dst.pixels)
}

/// `width * height * 3`, or `None` if it does not fit in `usize`.
fn rgb8_len(width: u32, height: u32) -> Option<usize> {
    usize::try_from(width)
        .ok()?
        .checked_mul(usize::try_from(height).ok()?)?
        .checked_mul(3)
}

/// Borrowed, validated RGB8 source image.
struct Rgb8Ref<'a> {
    pixels: &'a [u8],
    width: u32,
    height: u32,
}

/// Owned RGB8 output image.
struct Canvas {
    pixels: Vec<u8>,
    width: u32,
    height: u32,
}

impl Canvas {
    /// A `width x height` canvas filled with `fill`, or `TooLarge` if it cannot
    /// be allocated (reported as an error rather than aborting the process).
    fn filled(width: u32, height: u32, fill: [u8; 3]) -> Result<Self, ResizeError> {
        let too_large = ResizeError::TooLarge { width, height };
        let len = rgb8_len(width, height).ok_or_else(|| too_large.clone())?;
        let mut pixels = Vec::new();
        pixels.try_reserve_exact(len).map_err(|_| too_large)?;
        // A memset, then the fill written pixel by pixel only when it is not black (a byte
        // iterator over `cycle()` cost 8% of a 500x375 -> 224 decode-and-resize).
        pixels.resize(len, 0);
        if fill != [0; 3] {
            for px in pixels.chunks_exact_mut(3) {
                px.copy_from_slice(&fill);
            }
        }
        Ok(Self { pixels, width, height })
    }

    /// The canvas from the top-left pixel of `rect` on, and the row stride in
    /// bytes: row `y` of `rect` starts at `y * stride`.
    fn rect_mut(&mut self, rect: Rect) -> (&mut [u8], usize) {
        let stride = self.width as usize * 3;
        let start = rect.top as usize * stride + rect.left as usize * 3;
        (&mut self.pixels[start..], stride)
    }
}

/// A sub-pixel window of the source, in source pixel units.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SrcWindow {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl SrcWindow {
    fn full(sw: u32, sh: u32) -> Self {
        Self {
            left: 0.0,
            top: 0.0,
            width: f64::from(sw),
            height: f64::from(sh),
        }
    }

    /// The largest centred window with the aspect ratio of `dw x dh`; the same
    /// arithmetic as Pillow's `ImageOps.fit` (with `bleed = 0`).
    fn centred_with_aspect(sw: u32, sh: u32, dw: u32, dh: u32) -> Self {
        let (w, h) = (f64::from(sw), f64::from(sh));
        let src_ratio = w / h;
        let dst_ratio = f64::from(dw) / f64::from(dh);
        let (cw, ch) = if src_ratio == dst_ratio {
            (w, h)
        } else if src_ratio > dst_ratio {
            (dst_ratio * h, h)
        } else {
            (w, w / dst_ratio)
        };
        Self {
            left: (w - cw) * 0.5,
            top: (h - ch) * 0.5,
            width: cw,
            height: ch,
        }
    }

    /// The window's corners `(x0, y0, x1, y1)` rounded to `f32`, which is how
    /// Pillow's C code receives a resize box.
    fn pillow_box(self) -> [f32; 4] {
        [
            self.left as f32,
            self.top as f32,
            (self.left + self.width) as f32,
            (self.top + self.height) as f32,
        ]
    }
}

/// An integer rectangle of the destination canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
}

impl Rect {
    fn full(width: u32, height: u32) -> Self {
        Self {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    /// Where a `sw x sh` image scaled to fit inside `dw x dh` lands, centred.
    /// The limiting side is exact; the other is `round(side * scale)`, clamped
    /// to `1..=target side`. Integer arithmetic, so no float edge cases.
    fn letterbox(sw: u32, sh: u32, dw: u32, dh: u32) -> Self {
        let (sw64, sh64, dw64, dh64) = (u64::from(sw), u64::from(sh), u64::from(dw), u64::from(dh));
        // round(a * b / c) for a, b < 2^32, c >= 1: fits in u64 and in u32 after clamping.
        let round_div = |a: u64, b: u64, c: u64| (2 * a * b + c) / (2 * c);
        let (width, height) = if dw64 * sh64 <= dh64 * sw64 {
            // Width is the limiting side.
            let h = round_div(sh64, dw64, sw64).clamp(1, dh64);
            (dw, u32::try_from(h).unwrap_or(dh))
        } else {
            let w = round_div(sw64, dh64, sh64).clamp(1, dw64);
            (u32::try_from(w).unwrap_or(dw), dh)
        };
        Self {
            left: (dw - width) / 2,
            top: (dh - height) / 2,
            width,
            height,
        }
    }
}

/// Pillow 13's choice of pass order (`ImagingResampleInner`, added in
/// python-pillow/Pillow#9549): the vertical pass runs first when the height
/// shrinks by more than twice as many pixels as the width. The rule uses the
/// whole source size, not the crop box. Earlier Pillow versions always ran the
/// horizontal pass first. The order matters because the intermediate image is
/// rounded and clipped to u8.
fn pillow_horizontal_first(src_w: u32, src_h: u32, out_w: u32, out_h: u32) -> bool {
    let shrink_h = i64::from(src_h) - i64::from(out_h);
    let shrink_w = i64::from(src_w) - i64::from(out_w);
    !(shrink_h > 0 && shrink_h > shrink_w * 2)
}

/// Convolution resize of `window` of `src` into `rect` of `dst` with
/// `fast_image_resize`, running the passes in Pillow's order (see module docs).
fn fir_convolve(
    src: &Rgb8Ref<'_>,
    window: SrcWindow,
    dst: &mut Canvas,
    rect: Rect,
    filter: Filter,
    kernel: &mut Kernel,
) -> Result<(), ResizeError> {
    let (filter_type, support) = match filter {
        // Nearest is not a convolution and never reaches this function.
        Filter::Nearest | Filter::Bilinear => (FilterType::Bilinear, 1.0),
        Filter::Bicubic => (FilterType::CatmullRom, 2.0),
        Filter::Lanczos3 => (FilterType::Lanczos3, 3.0),
    };
    let algorithm = ResizeAlg::Convolution(filter_type);
    let Kernel { resizer, scratch } = kernel;
    let mut dst_image =
        Image::from_slice_u8(dst.width, dst.height, dst.pixels.as_mut_slice(), PixelType::U8x3).map_err(backend)?;
    let mut dst_view =
        CroppedImageMut::new(&mut dst_image, rect.left, rect.top, rect.width, rect.height).map_err(backend)?;
    let src_image = ImageRef::new(src.width, src.height, src.pixels, PixelType::U8x3).map_err(backend)?;

    let need_horizontal = f64::from(rect.width) != window.width || window.left != window.left.round();
    let need_vertical = f64::from(rect.height) != window.height || window.top != window.top.round();
    // With both passes needed, `fast_image_resize` runs the vertical one first
    // for u8 images; when Pillow does too, one call is exactly right.
    let split =
        need_horizontal && need_vertical && pillow_horizontal_first(src.width, src.height, rect.width, rect.height);
    if !split {
        let options =
            ResizeOptions::new()
                .resize_alg(algorithm)
                .crop(window.left, window.top, window.width, window.height);
        return resizer.resize(&src_image, &mut dst_view, &options).map_err(backend);
    }

    // Pass 1 only needs the source rows the vertical kernel can reach: the
    // window plus the kernel radius (support scaled when downscaling) and a
    // spare row. Rows outside that band have zero weight, so the result is
    // unchanged; it just avoids work when cropping a tall image.
    let radius = support * (window.height / f64::from(rect.height)).max(1.0);
    let margin = radius.ceil() + 1.0;
    let first_row = (window.top.floor() - margin).max(0.0) as u32;
    let end_row = ((window.top + window.height).ceil() + margin).min(f64::from(src.height)) as u32;
    let band_height = end_row - first_row;
    let len = rgb8_len(rect.width, band_height).ok_or(ResizeError::TooLarge {
        width: rect.width,
        height: band_height,
    })?;
    scratch.clear();
    scratch.resize(len, 0);
    let mut band =
        Image::from_slice_u8(rect.width, band_height, scratch.as_mut_slice(), PixelType::U8x3).map_err(backend)?;
    let horizontal = ResizeOptions::new().resize_alg(algorithm).crop(
        window.left,
        f64::from(first_row),
        window.width,
        f64::from(band_height),
    );
    resizer.resize(&src_image, &mut band, &horizontal).map_err(backend)?;
    let vertical = ResizeOptions::new().resize_alg(algorithm).crop(
        0.0,
        window.top - f64::from(first_row),
        f64::from(rect.width),
        window.height,
    );
    resizer.resize(&band, &mut dst_view, &vertical).map_err(backend)
}

/// Wraps a `fast_image_resize` error; these indicate a bug in this module.
fn backend(err: impl std::fmt::Display) -> ResizeError {
    ResizeError::Backend(err.to_string())
}

/// Nearest-neighbour exactly as Pillow does it. `Image.resize(..., NEAREST)`
/// does not go through `Resample.c` but through `ImagingTransform` →
/// `ImagingScaleAffine` (`libImaging/Geometry.c`): with `scale = (x1 - x0) /
/// out` computed from the `f32` box, the source column of output column `x` is
/// `trunc(xo)`, where `xo` starts at `x0 + scale / 2` and is advanced by
/// `xo += scale` (repeated addition, not `x0 + (x + 0.5) * scale`); rows
/// likewise. Indices are clamped to the image (Pillow leaves such pixels black;
/// with in-bounds boxes this cannot happen).
fn nearest_pillow(src: &Rgb8Ref<'_>, window: SrcWindow, dst: &mut Canvas, rect: Rect) {
    fn source_indices(start: f32, end: f32, out: u32, src_len: u32) -> Vec<usize> {
        let scale = f64::from(end - start) / f64::from(out);
        let last = src_len.saturating_sub(1) as usize;
        let mut pos = f64::from(start) + scale * 0.5;
        (0..out)
            .map(|_| {
                // `as` saturates (negative/NaN → 0), which is the clamp we want.
                let index = (pos as usize).min(last);
                pos += scale;
                index
            })
            .collect()
    }
    let [x0, y0, x1, y1] = window.pillow_box();
    let xs = source_indices(x0, x1, rect.width, src.width);
    let ys = source_indices(y0, y1, rect.height, src.height);
    let src_stride = src.width as usize * 3;
    let row_len = rect.width as usize * 3;
    let (out, out_stride) = dst.rect_mut(rect);
    for (dy, &sy) in ys.iter().enumerate() {
        let src_row = &src.pixels[sy * src_stride..][..src_stride];
        let dst_row = &mut out[dy * out_stride..][..row_len];
        for (px, &sx) in dst_row.chunks_exact_mut(3).zip(&xs) {
            px.copy_from_slice(&src_row[sx * 3..sx * 3 + 3]);
        }
    }
}

/// Port of Pillow's 8-bit convolution resampler (`libImaging/Resample.c`:
/// `precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`,
/// `ImagingResampleVertical_8bpc`, `ImagingResampleInner`), specialised to RGB.
mod pillow {
    use super::{Canvas, Filter, Rect, Rgb8Ref, SrcWindow};

    /// Fixed-point fraction bits: 8 bits of result, 2 bits of headroom for
    /// kernels whose partial sums leave 0..1.
    const PRECISION_BITS: u32 = 32 - 8 - 2;

    fn bilinear(x: f64) -> f64 {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    }

    fn bicubic(x: f64) -> f64 {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    }

    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    }

    fn lanczos3(x: f64) -> f64 {
        if (-3.0..3.0).contains(&x) {
            sinc(x) * sinc(x / 3.0)
        } else {
            0.0
        }
    }

    /// Per output pixel: first input index, and fixed-point weights of the
    /// consecutive input pixels from there.
    struct Coeffs {
        ksize: usize,
        bounds: Vec<(usize, usize)>, // (first input index, number of taps)
        weights: Vec<i32>,           // out_size * ksize, row-major
    }

    impl Coeffs {
        fn taps(&self, out: usize) -> (usize, &[i32]) {
            let (first, count) = self.bounds[out];
            (first, &self.weights[out * self.ksize..][..count])
        }
    }

    /// `precompute_coeffs` + `normalize_coeffs_8bpc`. `in0`/`in1` are the box
    /// edges as `f32`, as in Pillow (the span is subtracted in `f32` too).
    fn coeffs(in_size: usize, in0: f32, in1: f32, out_size: usize, filter: fn(f64) -> f64, support: f64) -> Coeffs {
        let scale = f64::from(in1 - in0) / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = support * filter_scale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filter_scale = 1.0 / filter_scale;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C's `(int)` truncation; the `as` casts saturate instead of overflowing.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let mut ww = 0.0;
            for (x, w) in k[..count].iter_mut().enumerate() {
                *w = filter((x as f64 + xmin as f64 - center + 0.5) * inv_filter_scale);
                ww += *w;
            }
            let scale_fixed = f64::from(1u32 << PRECISION_BITS);
            for (dst, &w) in row.iter_mut().zip(&k[..count]) {
                let w = if ww != 0.0 { w / ww } else { w };
                *dst = if w < 0.0 {
                    (-0.5 + w * scale_fixed) as i32
                } else {
                    (0.5 + w * scale_fixed) as i32
                };
            }
            bounds.push((xmin as usize, count));
        }
        Coeffs { ksize, bounds, weights }
    }

    /// Pillow's `clip8`: drop the fraction bits and clamp to 0..=255.
    fn clip8(acc: i64) -> u8 {
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    const HALF: i64 = 1 << (PRECISION_BITS - 1);

    /// `ImagingResampleHorizontal_8bpc`: `rows` input rows from `input` (stride
    /// `in_stride`) into `out` (stride `out_stride`), `cx.bounds.len()` columns.
    fn horizontal(input: &[u8], in_stride: usize, rows: usize, out: &mut [u8], out_stride: usize, cx: &Coeffs) {
        for y in 0..rows {
            let in_row = &input[y * in_stride..];
            let out_row = &mut out[y * out_stride..][..cx.bounds.len() * 3];
            for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
                let (first, taps) = cx.taps(xx);
                let mut acc = [HALF; 3];
                for (src, &w) in in_row[first * 3..].chunks_exact(3).zip(taps) {
                    let w = i64::from(w);
                    acc[0] += i64::from(src[0]) * w;
                    acc[1] += i64::from(src[1]) * w;
                    acc[2] += i64::from(src[2]) * w;
                }
                px.copy_from_slice(&acc.map(clip8));
            }
        }
    }

    /// `ImagingResampleVertical_8bpc`: `width` pixels per row.
    fn vertical(input: &[u8], in_stride: usize, width: usize, out: &mut [u8], out_stride: usize, cy: &Coeffs) {
        let row_len = width * 3;
        let mut acc = Vec::with_capacity(row_len);
        for yy in 0..cy.bounds.len() {
            let (first, taps) = cy.taps(yy);
            acc.clear();
            acc.resize(row_len, HALF);
            for (y, &w) in taps.iter().enumerate() {
                let w = i64::from(w);
                let in_row = &input[(first + y) * in_stride..][..row_len];
                for (a, &v) in acc.iter_mut().zip(in_row) {
                    *a += i64::from(v) * w;
                }
            }
            let out_row = &mut out[yy * out_stride..][..row_len];
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
    }

    /// `ImagingResampleInner`: resample `window` of `src` into `rect` of `dst`.
    /// `scratch` holds the intermediate (horizontally resampled) rows.
    pub(super) fn convolve(
        src: &Rgb8Ref<'_>,
        window: SrcWindow,
        dst: &mut Canvas,
        rect: Rect,
        filter: Filter,
        scratch: &mut Vec<u8>,
    ) -> Result<(), super::ResizeError> {
        let (filter_fn, support): (fn(f64) -> f64, f64) = match filter {
            // Nearest is not a convolution and never reaches this function.
            Filter::Nearest | Filter::Bilinear => (bilinear, 1.0),
            Filter::Bicubic => (bicubic, 2.0),
            Filter::Lanczos3 => (lanczos3, 3.0),
        };
        let [x0, y0, x1, y1] = window.pillow_box();
        let (in_w, in_h) = (src.width as usize, src.height as usize);
        let (out_w, out_h) = (rect.width as usize, rect.height as usize);
        let need_horizontal = out_w != in_w || x0 != 0.0 || x1 != out_w as f32;
        let need_vertical = out_h != in_h || y0 != 0.0 || y1 != out_h as f32;

        let (out, out_stride) = dst.rect_mut(rect);
        let in_stride = in_w * 3;
        let horizontal_first = super::pillow_horizontal_first(src.width, src.height, rect.width, rect.height);
        let cy = coeffs(in_h, y0, y1, out_h, filter_fn, support);
        let cx = coeffs(in_w, x0, x1, out_w, filter_fn, support);

        match (need_horizontal, need_vertical) {
            (false, false) => {
                // Same size, integral box at the origin: a copy.
                for (y, row) in src.pixels.chunks_exact(in_stride).enumerate() {
                    out[y * out_stride..][..in_stride].copy_from_slice(row);
                }
                Ok(())
            }
            (false, true) => {
                vertical(src.pixels, in_stride, in_w, out, out_stride, &cy);
                Ok(())
            }
            (true, false) => {
                horizontal(src.pixels, in_stride, in_h, out, out_stride, &cx);
                Ok(())
            }
            (true, true) if horizontal_first => {
                // Horizontal pass over just the rows the vertical pass reads.
                let first_row = cy.bounds.first().map_or(0, |b| b.0);
                let end_row = cy.bounds.last().map_or(0, |b| b.0 + b.1);
                let band_rows = end_row.saturating_sub(first_row);
                let band_stride = out_w * 3;
                let band = temp(scratch, band_stride, band_rows, rect.width)?;
                horizontal(
                    &src.pixels[first_row * in_stride..],
                    in_stride,
                    band_rows,
                    band,
                    band_stride,
                    &cx,
                );
                let mut cy = cy;
                for bound in &mut cy.bounds {
                    bound.0 -= first_row;
                }
                vertical(band, band_stride, out_w, out, out_stride, &cy);
                Ok(())
            }
            (true, true) => {
                // Vertical pass over the full source width, then horizontal.
                let temp_stride = in_stride;
                let tmp = temp(scratch, temp_stride, out_h, src.width)?;
                vertical(src.pixels, in_stride, in_w, tmp, temp_stride, &cy);
                horizontal(tmp, temp_stride, out_h, out, out_stride, &cx);
                Ok(())
            }
        }
    }

    /// `scratch` resized to `stride * rows` bytes for an intermediate image.
    fn temp(scratch: &mut Vec<u8>, stride: usize, rows: usize, width: u32) -> Result<&mut [u8], super::ResizeError> {
        let too_large = super::ResizeError::TooLarge {
            width,
            height: u32::try_from(rows).unwrap_or(u32::MAX),
        };
        let len = stride.checked_mul(rows).ok_or(too_large.clone())?;
        scratch.clear();
        scratch.try_reserve(len).map_err(|_| too_large)?;
        scratch.resize(len, 0);
        Ok(scratch.as_mut_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resize");

    fn load_png(path: &Path) -> (Vec<u8>, u32, u32) {
        let img = image::ImageReader::open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
            .decode()
            .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
            .to_rgb8();
        let (w, h) = img.dimensions();
        (img.into_raw(), w, h)
    }

    fn parse_filter(name: &str) -> Filter {
        match name {
            "nearest" => Filter::Nearest,
            "bilinear" => Filter::Bilinear,
            "bicubic" => Filter::Bicubic,
            "lanczos3" => Filter::Lanczos3,
            other => panic!("unknown filter {other:?} in manifest"),
        }
    }

    /// One line of `manifest.tsv`.
    struct Case {
        file: String,
        source: String,
        mode: Mode,
        filter: Filter,
        width: u32,
        height: u32,
    }

    fn manifest() -> Vec<Case> {
        let path = PathBuf::from(FIXTURES).join("manifest.tsv");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert_eq!(f.len(), 6, "bad manifest line {line:?}");
                Case {
                    file: f[0].to_owned(),
                    source: f[1].to_owned(),
                    mode: match f[2] {
                        "stretch" => Mode::Stretch,
                        "fit" => Mode::Crop,
                        other => panic!("unknown mode {other:?}"),
                    },
                    filter: parse_filter(f[3]),
                    width: f[4].parse().expect("width"),
                    height: f[5].parse().expect("height"),
                }
            })
            .collect()
    }

    /// (max abs difference, number of differing values).
    fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold((0, 0), |(max, n), (&x, &y)| {
            let d = x.abs_diff(y);
            (max.max(d), n + usize::from(d != 0))
        })
    }

    /// Every Pillow fixture (Image.resize for "stretch", ImageOps.fit for "fit")
    /// is reproduced within ±1 per value.
    #[test]
    fn matches_pillow_fixtures() {
        let cases = manifest();
        assert!(cases.len() >= 52, "expected the full fixture set");
        let mut failures = Vec::new();
        let mut worst: Vec<(String, u8)> = Vec::new();
        for case in &cases {
            let (src, sw, sh) = load_png(&Path::new(FIXTURES).join(&case.source));
            let (want, w, h) = load_png(&Path::new(FIXTURES).join(&case.file));
            assert_eq!((w, h), (case.width, case.height), "{}", case.file);
            let got = resize_rgb8(&src, sw, sh, w, h, case.filter, case.mode, [0; 3])
                .unwrap_or_else(|e| panic!("{}: {e}", case.file));
            let (max, count) = diff(&got, &want);
            let key = format!("{:?}/{:?}", case.mode, case.filter);
            match worst.iter_mut().find(|(k, _)| *k == key) {
                Some((_, m)) => *m = (*m).max(max),
                None => worst.push((key, max)),
            }
            if max > 1 {
                failures.push(format!(
                    "{}: max diff {max}, {count} of {} values differ",
                    case.file,
                    got.len()
                ));
            }
        }
        eprintln!("max |diff| vs Pillow per mode/filter: {worst:?}");
        assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    }

    /// `fast_image_resize`'s own nearest neighbour, unmodified (for the report).
    fn fir_nearest(src: &[u8], sw: u32, sh: u32, w: u32, h: u32) -> Vec<u8> {
        let src = ImageRef::new(sw, sh, src, PixelType::U8x3).unwrap();
        let mut dst = Image::new(w, h, PixelType::U8x3);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Nearest);
        Resizer::new().resize(&src, &mut dst, &options).unwrap();
        dst.into_vec()
    }

    /// Both engines against every fixture. The port of Pillow must be within ±1
    /// everywhere; `fast_image_resize` figures are printed for the record
    /// (`cargo test engine_report -- --nocapture`).
    #[test]
    fn engine_report() {
        let mut rows: Vec<(String, u8)> = Vec::new();
        let mut record = |key: String, max: u8| match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, m)) => *m = (*m).max(max),
            None => rows.push((key, max)),
        };
        for case in manifest() {
            let (src, sw, sh) = load_png(&Path::new(FIXTURES).join(&case.source));
            let (want, w, h) = load_png(&Path::new(FIXTURES).join(&case.file));
            let run =
                |engine| resize_with_engine(&src, (sw, sh), (w, h), case.filter, engine, case.mode, [0; 3]).unwrap();
            let (port, _) = diff(&run(Engine::Pillow), &want);
            assert!(port <= 1, "{}: Pillow port off by {port}", case.file);
            if port > 0 {
                eprintln!("PORT {} {port}", case.file);
            }
            record(format!("port {:?}/{:?}", case.mode, case.filter), port);
            let fir = if case.filter == Filter::Nearest {
                if case.mode != Mode::Stretch {
                    continue;
                }
                fir_nearest(&src, sw, sh, w, h)
            } else {
                run(Engine::Fir)
            };
            let (fir, count) = diff(&fir, &want);
            eprintln!("fir  {:<40} max {fir:>2}, {count} values differ", case.file);
            record(format!("fir  {:?}/{:?}", case.mode, case.filter), fir);
        }
        for (key, max) in rows {
            eprintln!("{key:<28} max |diff| {max}");
        }
    }

    /// Rough speed of the two engines; run with
    /// `cargo test --release bench_engines -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing only; meaningful in release builds"]
    fn bench_engines() {
        let cases = [((1024, 768), (224, 224)), ((640, 480), (1280, 960))];
        for ((sw, sh), (w, h)) in cases {
            let src = noise(sw, sh, 42);
            for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
                for engine in [Engine::Fir, Engine::Pillow] {
                    let run =
                        || resize_with_engine(&src, (sw, sh), (w, h), filter, engine, Mode::Stretch, [0; 3]).unwrap();
                    run();
                    let start = std::time::Instant::now();
                    let n = 10;
                    for _ in 0..n {
                        std::hint::black_box(run());
                    }
                    let ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
                    eprintln!("{sw}x{sh} -> {w}x{h} {filter:?} {engine:?}: {ms:.2} ms");
                }
            }
        }
    }

    /// Deterministic pseudo-random RGB noise (worst case for rounding: hard
    /// edges everywhere).
    fn noise(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..w * h * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Beyond the fixtures: the `fast_image_resize` engine stays within ±1 of
    /// the Pillow port for the filters it is used for, on noise (the hardest
    /// input) over many up/down/mixed scale factors and both sub-pixel crops.
    #[test]
    fn fir_engine_agrees_with_pillow_port() {
        let sizes = [(1, 1), (2, 3), (5, 5), (7, 19), (16, 9), (31, 17), (64, 48), (100, 37)];
        let mut worst = 0;
        for (i, &(sw, sh)) in [(13, 11), (40, 23), (9, 64), (97, 61)].iter().enumerate() {
            let src = noise(sw, sh, 0x9e37_79b9_7f4a_7c15 + i as u64);
            for &(w, h) in &sizes {
                for filter in [Filter::Bilinear, Filter::Bicubic] {
                    for mode in [Mode::Stretch, Mode::Crop, Mode::Pad] {
                        let run =
                            |engine| resize_with_engine(&src, (sw, sh), (w, h), filter, engine, mode, [7; 3]).unwrap();
                        let (max, count) = diff(&run(Engine::Fir), &run(Engine::Pillow));
                        assert!(
                            max <= 1,
                            "{filter:?} {mode:?} {sw}x{sh} -> {w}x{h}: max {max}, {count} differ"
                        );
                        worst = worst.max(max);
                    }
                }
            }
        }
        eprintln!("fir vs Pillow port on noise: max |diff| {worst}");
    }

    /// Exact-tie sampling positions, checked against Pillow 13.0.0:
    /// `Image.fromarray(np.arange(n, dtype=np.int32)[None], "I").resize((m, 1), NEAREST)`.
    /// At 2 -> 7, output column 3 samples exactly x = 1.0 in real arithmetic;
    /// Pillow's accumulated `xo += scale` lands just below (column 0), a
    /// product `(x + 0.5) * scale` (what `fast_image_resize` uses) on 1.0.
    #[test]
    fn nearest_matches_pillow_on_exact_ties() {
        for (n, m, want) in [
            (2u32, 7u32, &[0u8, 0, 0, 0, 1, 1, 1][..]),
            (3, 7, &[0, 0, 1, 1, 1, 2, 2]),
            (5, 11, &[0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]),
        ] {
            let row: Vec<u8> = (0..n as u8).flat_map(|i| [i; 3]).collect();
            let want: Vec<u8> = want.iter().flat_map(|&i| [i; 3]).collect();
            let wide = resize_rgb8(&row, n, 1, m, 1, Filter::Nearest, Mode::Stretch, [0; 3]);
            assert_eq!(wide.unwrap(), want, "{n} -> {m} horizontally");
            let tall = resize_rgb8(&row, 1, n, 1, m, Filter::Nearest, Mode::Stretch, [0; 3]);
            assert_eq!(tall.unwrap(), want, "{n} -> {m} vertically");
        }
        let row = [0, 0, 0, 1, 1, 1];
        eprintln!(
            "fast_image_resize nearest 2 -> 7: {:?}",
            fir_nearest(&row, 2, 1, 7, 1).iter().step_by(3).collect::<Vec<_>>()
        );
    }

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x * 7) as u8, (y * 5) as u8, 100]))
            .collect()
    }

    const ALL_FILTERS: [Filter; 4] = [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3];

    #[test]
    fn stretch_to_same_size_is_identity() {
        let src = gradient(13, 7);
        for filter in ALL_FILTERS {
            let out = resize_rgb8(&src, 13, 7, 13, 7, filter, Mode::Stretch, [0; 3]).unwrap();
            assert_eq!(out, src, "{filter:?}");
        }
    }

    #[test]
    fn crop_and_pad_of_same_size_are_identity() {
        let src = gradient(13, 7);
        for filter in ALL_FILTERS {
            for mode in [Mode::Crop, Mode::Pad] {
                let out = resize_rgb8(&src, 13, 7, 13, 7, filter, mode, [9; 3]).unwrap();
                assert_eq!(out, src, "{filter:?} {mode:?}");
            }
        }
    }

    #[test]
    fn one_pixel_source_fills_output() {
        let src = [10, 200, 30];
        for filter in ALL_FILTERS {
            for mode in [Mode::Stretch, Mode::Crop, Mode::Pad] {
                let out = resize_rgb8(&src, 1, 1, 5, 3, filter, mode, [0; 3]).unwrap();
                assert_eq!(out.len(), 5 * 3 * 3);
                if mode == Mode::Pad {
                    // 1x1 scaled to fit 5x3 -> 3x3 centred at column 1.
                    for (i, px) in out.chunks_exact(3).enumerate() {
                        let x = i % 5;
                        let want = if (1..4).contains(&x) { src } else { [0; 3] };
                        assert_eq!(px, want, "{filter:?} pixel {i}");
                    }
                } else {
                    assert!(out.chunks_exact(3).all(|p| p == src), "{filter:?} {mode:?}");
                }
            }
        }
        // And down to 1x1.
        let out = resize_rgb8(&src, 1, 1, 1, 1, Filter::Bicubic, Mode::Stretch, [0; 3]).unwrap();
        assert_eq!(out, src);
    }

    #[test]
    fn output_dimensions_for_every_mode() {
        let src = gradient(40, 20);
        for filter in ALL_FILTERS {
            for mode in [Mode::Stretch, Mode::Crop, Mode::Pad] {
                for (w, h) in [(1, 1), (7, 30), (30, 7), (80, 40), (3, 1)] {
                    let out = resize_rgb8(&src, 40, 20, w, h, filter, mode, [0; 3]).unwrap();
                    assert_eq!(out.len(), (w * h * 3) as usize, "{filter:?} {mode:?} {w}x{h}");
                }
            }
        }
    }

    #[test]
    fn pad_letterboxes_with_fill() {
        // 40x20 into 30x30 -> scaled to 30x15, rows 7..22 hold the image.
        let src = vec![200u8; 40 * 20 * 3];
        let fill = [1, 2, 3];
        for filter in ALL_FILTERS {
            let out = resize_rgb8(&src, 40, 20, 30, 30, filter, Mode::Pad, fill).unwrap();
            for (y, row) in out.chunks_exact(30 * 3).enumerate() {
                let want = if (7..22).contains(&y) { [200; 3] } else { fill };
                assert!(row.chunks_exact(3).all(|p| p == want), "{filter:?} row {y}");
            }
        }
        // Tall source: 10x40 into 20x20 -> 5x20 at columns 7..12.
        let src = vec![50u8; 10 * 40 * 3];
        let out = resize_rgb8(&src, 10, 40, 20, 20, Filter::Bilinear, Mode::Pad, fill).unwrap();
        for (i, px) in out.chunks_exact(3).enumerate() {
            let want = if (7..12).contains(&(i % 20)) { [50; 3] } else { fill };
            assert_eq!(px, want, "pixel {i}");
        }
    }

    #[test]
    fn letterbox_geometry() {
        assert_eq!(
            Rect::letterbox(40, 20, 30, 30),
            Rect {
                left: 0,
                top: 7,
                width: 30,
                height: 15
            }
        );
        // 1000x1 into 10x10: height rounds to 0, clamped to 1.
        assert_eq!(
            Rect::letterbox(1000, 1, 10, 10),
            Rect {
                left: 0,
                top: 4,
                width: 10,
                height: 1
            }
        );
        // Rounding: 3x2 into 4x4 -> 4 x round(2.667) = 4x3.
        assert_eq!(
            Rect::letterbox(3, 2, 4, 4),
            Rect {
                left: 0,
                top: 0,
                width: 4,
                height: 3
            }
        );
        // Same aspect ratio fills everything.
        assert_eq!(Rect::letterbox(64, 48, 32, 24), Rect::full(32, 24));
    }

    #[test]
    fn crop_of_wide_image_keeps_centre() {
        // 40x20: red columns 0..4, green 4..36, blue 36..40. A square crop takes
        // the centre window x in 10..30; kernels may read a few pixels beyond the
        // window (as Pillow's do), but never as far as the red or blue columns.
        let src: Vec<u8> = (0..20)
            .flat_map(|_| {
                (0..40).flat_map(|x| match x {
                    0..4 => [255, 0, 0],
                    4..36 => [0, 255, 0],
                    _ => [0, 0, 255],
                })
            })
            .collect();
        for filter in ALL_FILTERS {
            let out = resize_rgb8(&src, 40, 20, 10, 10, filter, Mode::Crop, [0; 3]).unwrap();
            assert!(out.chunks_exact(3).all(|p| p == [0, 255, 0]), "{filter:?}: {out:?}");
            // Whereas stretching keeps the red edge.
            let out = resize_rgb8(&src, 40, 20, 10, 10, filter, Mode::Stretch, [0; 3]).unwrap();
            assert!(out[0] > 100, "{filter:?}: {out:?}");
        }
        let window = SrcWindow::centred_with_aspect(40, 20, 10, 10);
        assert_eq!(
            window,
            SrcWindow {
                left: 10.0,
                top: 0.0,
                width: 20.0,
                height: 20.0
            }
        );
        // Sub-pixel: 5x4 to a square keeps a 4x4 window starting at x = 0.5.
        let window = SrcWindow::centred_with_aspect(5, 4, 8, 8);
        assert_eq!(
            window,
            SrcWindow {
                left: 0.5,
                top: 0.0,
                width: 4.0,
                height: 4.0
            }
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let src = gradient(4, 4);
        let r = |s: &[u8], sw, sh, dw, dh| resize_rgb8(s, sw, sh, dw, dh, Filter::Bilinear, Mode::Stretch, [0; 3]);
        assert!(matches!(r(&src, 0, 4, 2, 2), Err(ResizeError::EmptySource { .. })));
        assert!(matches!(r(&src, 4, 4, 0, 2), Err(ResizeError::EmptyTarget { .. })));
        assert!(matches!(r(&src[1..], 4, 4, 2, 2), Err(ResizeError::BufferSize { .. })));
        assert!(matches!(r(&src, 4, 5, 2, 2), Err(ResizeError::BufferSize { .. })));
        assert!(matches!(
            r(&src, 4, 4, u32::MAX, u32::MAX),
            Err(ResizeError::TooLarge { .. })
        ));
    }

    #[test]
    fn resizer_is_reusable_across_sizes() {
        // Same thread, several different geometries: results must not depend on
        // what the thread-local resizer did before.
        let src = gradient(50, 30);
        let first = resize_rgb8(&src, 50, 30, 17, 9, Filter::Lanczos3, Mode::Stretch, [0; 3]);
        for (w, h) in [(100, 60), (3, 3), (17, 9)] {
            resize_rgb8(&src, 50, 30, w, h, Filter::Lanczos3, Mode::Crop, [0; 3]).unwrap();
        }
        let again = resize_rgb8(&src, 50, 30, 17, 9, Filter::Lanczos3, Mode::Stretch, [0; 3]);
        assert_eq!(first, again);
    }
}
