//! Charts (line, grouped histogram, confusion matrix) rendered both as standalone SVG and as PNG.
//!
//! Text is rasterised by plotters' `ab_glyph` feature from an embedded font, so no system font,
//! fontconfig or font-kit is needed. The font is DejaVu Sans (`assets/DejaVuSans.ttf`, Debian
//! `fonts-dejavu-core`): Bitstream Vera license, DejaVu changes public domain; see
//! `assets/DejaVuSans.LICENSE`. PNG encoding uses the project's `image` 0.25 because plotters'
//! own `bitmap_encoder` feature would pull in a second `image` (0.24).

use std::sync::OnceLock;

use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, SegmentValue, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 400;
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// Larger magnitudes are treated like infinities: plotters' pixel mapping overflows near f64::MAX.
const MAX_ABS: f64 = 1e300;
/// Above this a confusion matrix has sub-pixel cells (and a huge SVG); counts are written up to 40 classes.
const MAX_CLASSES: usize = 200;
/// Line width of data series; axes, ticks and the marker line are 1 px wide.
const SERIES_STROKE: u32 = 2;
/// Tableau-10 series colours.
const PALETTE: [u32; 10] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf,
];

/// A rendered chart: the same picture as SVG text and PNG bytes.
#[derive(Debug, Clone)]
pub struct Chart {
    pub svg: String,
    pub png: Vec<u8>,
    /// Number of series drawn, including series without any drawable point.
    pub series: usize,
}

/// One named line of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: no finite data points")]
    NoData,
    #[error("invalid axis range [{lo}, {hi}]")]
    InvalidRange { lo: f64, hi: f64 },
    /// Ragged histogram bins, non-square confusion matrix, ...
    #[error("inconsistent plot input: {0}")]
    Shape(String),
    #[error("the embedded chart font could not be loaded")]
    Font,
    #[error("chart rendering failed: {0}")]
    Render(String),
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

fn re<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Render(e.to_string())
}

/// Registers the embedded font under plotters' "sans-serif" family once; later calls reuse the outcome.
fn ensure_font() -> Result<(), PlotError> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

fn color(i: usize) -> RGBColor {
    let c = PALETTE[i % PALETTE.len()];
    RGBColor((c >> 16) as u8, (c >> 8) as u8, c as u8)
}

/// How a legend entry shows what it names.
#[derive(Clone, Copy, Debug)]
enum Swatch {
    /// A filled square: a series' colour, a bar's fill or a shade.
    Fill(RGBColor),
    /// A thin line: a marker.
    Line(RGBColor),
}

/// One entry of a chart's legend.
#[derive(Clone, Debug)]
struct Entry {
    label: String,
    swatch: Swatch,
}

fn entry(label: impl Into<String>, swatch: Swatch) -> Entry {
    Entry {
        label: label.into(),
        swatch,
    }
}

/// Left and right margin of the chart, and of its legend rows.
const MARGIN: i32 = 12;
/// Height of one row of legend entries.
const LEGEND_ROW: i32 = 20;
/// Width of a legend label, from its length: wider than DejaVu Sans at 13 px ever draws.
fn label_width(label: &str) -> i32 {
    label.chars().count() as i32 * 8
}

/// Where each entry of the legend goes, as (x, row): left to right, a new row when the next
/// entry would pass the right margin. The number of rows is the largest row + 1.
fn legend_layout(entries: &[Entry]) -> Vec<(i32, i32)> {
    let (mut x, mut row) = (MARGIN, 0);
    let mut at = Vec::with_capacity(entries.len());
    for e in entries {
        let w = 14 + 6 + label_width(&e.label) + 18;
        if x > MARGIN && x + w > WIDTH as i32 - MARGIN {
            (x, row) = (MARGIN, row + 1);
        }
        at.push((x, row));
        x += w;
    }
    at
}

/// Height of the strip under the plot that holds the legend (nothing without entries).
fn legend_height(entries: &[Entry]) -> u32 {
    match legend_layout(entries).last() {
        Some(&(_, row)) => ((row + 1) * LEGEND_ROW + 8) as u32,
        None => 0,
    }
}

/// Draws the legend in its strip, outside the plotted data.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[Entry]) -> Result<(), PlotError> {
    let font = (FONT, 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (e, (x, row)) in entries.iter().zip(legend_layout(entries)) {
        let y = 4 + row * LEGEND_ROW + LEGEND_ROW / 2;
        match e.swatch {
            Swatch::Fill(c) => area.draw(&Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())),
            Swatch::Line(c) => area.draw(&PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(1))),
        }
        .map_err(re)?;
        area.draw(&Text::new(e.label.clone(), (x + 20, y), font.clone()))
            .map_err(re)?;
    }
    Ok(())
}

/// The SVG document `plot` with the elements of the SVG document `legend` (same size) added
/// last, in a `<g class="legend">`.
fn with_legend(plot: &str, legend: &str) -> String {
    let inner = legend
        .find(">\n")
        .zip(legend.rfind("</svg>"))
        .map_or("", |(a, b)| legend.get(a + 2..b).unwrap_or(""));
    let end = plot.rfind("</svg>").unwrap_or(plot.len());
    format!("{}<g class=\"legend\">\n{inner}</g>\n</svg>\n", &plot[..end])
}

/// Compact tick label: plain decimals for ordinary magnitudes, `1.5e-4` style otherwise.
fn fmt_num(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    let s = if (1e-3..1e5).contains(&a) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    };
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.')),
        None => s.trim_end_matches('0').trim_end_matches('.').to_string(),
    }
}

/// Linear axis range with a 5% margin; a flat range is widened around its value.
fn pad_linear(lo: f64, hi: f64) -> (f64, f64) {
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs() * 0.1 };
    if pad > 0.0 {
        (lo - pad, hi + pad)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

/// Log axis range (ends > 0) with a margin of 5% of the decades; a flat range becomes [x/2, 2x].
fn pad_log(lo: f64, hi: f64) -> (f64, f64) {
    let f = if hi > lo { (hi / lo).powf(0.05).min(10.0) } else { 2.0 };
    let a = if lo / f > 0.0 { lo / f } else { lo };
    let b = if (hi * f).is_finite() { hi * f } else { hi };
    if b > a { (a, b) } else { (a, a * 2.0) }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| {
        acc.map_or(Some((v, v)), |(lo, hi): (f64, f64)| Some((lo.min(v), hi.max(v))))
    })
}

type Ctx<'a, DB, X, Y> = ChartContext<'a, DB, Cartesian2d<X, Y>>;

/// Fills the background and builds a chart with the common caption, margins and label areas.
fn frame<'a, DB: DrawingBackend, X: AsRangedCoord, Y: AsRangedCoord>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_area: u32,
    (x, y): (X, Y),
) -> Result<Ctx<'a, DB, X::CoordDescType, Y::CoordDescType>, PlotError> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(y_area);
    builder.build_cartesian_2d(x, y).map_err(re)
}

/// Something that can draw itself on any plotters backend (once for SVG, once for PNG).
trait Plot {
    /// Draws the chart (axes and data) on `area`, the chart less its legend strip.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
    /// What the legend names, in order.
    fn legend(&self) -> Vec<Entry>;
}

/// Splits a chart's drawing area into the plot and, under it, the legend strip.
fn areas<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    strip: u32,
) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    root.split_vertically(HEIGHT - strip)
}

/// Draws `plot` as SVG and PNG, its legend in a strip under the data so it never covers a
/// series (in the SVG, the legend is the `<g class="legend">`).
fn render(plot: &impl Plot, series: usize) -> Result<Chart, PlotError> {
    ensure_font()?;
    let entries = plot.legend();
    let strip = legend_height(&entries);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(re)?;
        plot.draw(&areas(&root, strip).0)?;
        root.present().map_err(re)?;
    }
    let mut legend = String::new();
    {
        let root = SVGBackend::with_string(&mut legend, (WIDTH, HEIGHT)).into_drawing_area();
        draw_legend(&areas(&root, strip).1, &entries)?;
        root.present().map_err(re)?;
    }
    let svg = with_legend(&svg, &legend);
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(re)?;
        let (top, bottom) = areas(&root, strip);
        plot.draw(&top)?;
        draw_legend(&bottom, &entries)?;
        root.present().map_err(re)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    Ok(Chart { svg, png, series })
}

struct LinePlot<'a> {
    labels: [&'a str; 3],
    series: Vec<(&'a str, Vec<(f64, f64)>)>,
    log_x: bool,
    x_range: (f64, f64),
    y_range: (f64, f64),
    marker: Option<(f64, &'a str)>,
}

impl LinePlot<'_> {
    fn draw_on<DB, X>(&self, root: &DrawingArea<DB, Shift>, x: X) -> Result<(), PlotError>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let ([title, x_label, y_label], (y0, y1)) = (self.labels, self.y_range);
        let mut chart = frame(root, title, 60, (x, y0..y1))?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&fmt_num)
            .y_label_formatter(&fmt_num);
        mesh.draw().map_err(re)?;
        for (i, (_, points)) in self.series.iter().enumerate() {
            let line = LineSeries::new(points.iter().copied(), color(i).stroke_width(SERIES_STROKE));
            chart.draw_series(line).map_err(re)?;
            if let [p] = points.as_slice() {
                // A single point has no segment to draw: show it as a dot.
                chart.draw_series([Circle::new(*p, 3, color(i).filled())]).map_err(re)?;
            }
        }
        if let Some((mx, _)) = self.marker {
            chart
                .draw_series(LineSeries::new([(mx, y0), (mx, y1)], MARKER.stroke_width(1)))
                .map_err(re)?;
        }
        Ok(())
    }
}

/// The marker line's colour (70% black).
const MARKER: RGBColor = RGBColor(77, 77, 77);

impl Plot for LinePlot<'_> {
    fn legend(&self) -> Vec<Entry> {
        let series = self.series.iter().enumerate();
        let mut entries: Vec<Entry> = series
            .map(|(i, (name, _))| entry(*name, Swatch::Fill(color(i))))
            .collect();
        entries.extend(self.marker.map(|(_, label)| entry(label, Swatch::Line(MARKER))));
        entries
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let (x0, x1) = self.x_range;
        if self.log_x {
            self.draw_on(root, LogCoord::<f64>::from((x0..x1).log_scale()))
        } else {
            self.draw_on(root, RangedCoordf64::from(x0..x1))
        }
    }
}

/// Line chart: e.g. training curves per epoch (train loss, val loss, train acc, val acc).
///
/// Non-finite points (and |v| > 1e300), and with `log_x` points with x <= 0, are skipped. A series
/// left without points still gets its legend entry. `marker` draws a labelled vertical line at x
/// (e.g. the suggested learning rate of an LR range test, with `log_x`); it is left out when its x
/// cannot be shown on the axis. A log axis spanning more than ~300 decades is `InvalidRange`.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
    marker: Option<(f64, &str)>,
) -> Result<Chart, PlotError> {
    let keep = |&(x, y): &(f64, f64)| x.abs() <= MAX_ABS && y.abs() <= MAX_ABS && (!log_x || x > 0.0);
    let kept: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.points.iter().copied().filter(keep).collect()))
        .collect();
    let all = || kept.iter().flat_map(|(_, p)| p.iter());
    let marker = marker.filter(|&(x, _)| keep(&(x, 0.0)));
    let xs = all().map(|p| p.0).chain(marker.map(|m| m.0));
    let (Some((xlo, xhi)), Some((ylo, yhi))) = (min_max(xs), min_max(all().map(|p| p.1))) else {
        return Err(PlotError::NoData);
    };
    let x_range = if log_x { pad_log(xlo, xhi) } else { pad_linear(xlo, xhi) };
    if log_x && !(x_range.1 / x_range.0).is_finite() {
        // More than ~300 decades: plotters' log tick search would loop (practically) forever.
        return Err(PlotError::InvalidRange { lo: xlo, hi: xhi });
    }
    let n = kept.len();
    let y_range = pad_linear(ylo, yhi);
    render(
        &LinePlot {
            labels: [title, x_label, y_label],
            series: kept,
            log_x,
            x_range,
            y_range,
            marker,
        },
        n,
    )
}

struct HistPlot<'a> {
    labels: [&'a str; 3],
    lo: f64,
    hi: f64,
    bins: usize,
    y_max: f64,
    series: &'a [(String, Vec<f64>)],
}

impl Plot for HistPlot<'_> {
    fn legend(&self) -> Vec<Entry> {
        let names = self.series.iter().enumerate();
        names
            .map(|(i, (name, _))| entry(name.as_str(), Swatch::Fill(color(i))))
            .collect()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let mut chart = frame(root, self.labels[0], 60, (self.lo..self.hi, 0.0..self.y_max))?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh().x_desc(self.labels[1]).y_desc(self.labels[2]);
        mesh.x_label_formatter(&fmt_num)
            .y_label_formatter(&fmt_num)
            .draw()
            .map_err(re)?;
        let width = (self.hi - self.lo) / self.bins as f64;
        let bar = 0.9 * width / self.series.len() as f64;
        // Bars narrower than ~2 px are unreadable (e.g. 256-bin pixel histograms): draw outlines instead.
        let steps = self.bins * self.series.len() > 200;
        for (s, (_, values)) in self.series.iter().enumerate() {
            let c = color(s);
            if steps {
                let edges = |(b, v): (usize, &f64)| [b, b + 1].map(|e| (self.lo + e as f64 * width, *v));
                let outline = values.iter().enumerate().flat_map(edges);
                chart.draw_series(LineSeries::new(outline, c.stroke_width(SERIES_STROKE)))
            } else {
                let bars = values.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(b, v)| {
                    let x0 = self.lo + (b as f64 + 0.05) * width + s as f64 * bar;
                    Rectangle::new([(x0, 0.0), (x0 + bar, *v)], c.mix(0.85).filled())
                });
                chart.draw_series(bars)
            }
            .map_err(re)?;
        }
        Ok(())
    }
}

/// Grouped histogram: `series[i].1[b]` is the height of bin `b` (a count, or a share) of
/// equal-width bins over [lo, hi]; one bar per series in each bin (e.g. predicted-probability
/// histograms per true class). All series must have the same number of bins; heights must be
/// finite and not negative. With many bins x series, each series is drawn as a step outline.
pub fn histogram(
    title: &str,
    x_label: &str,
    y_label: &str,
    lo: f64,
    hi: f64,
    series: &[(String, Vec<f64>)],
) -> Result<Chart, PlotError> {
    if !(lo < hi && lo.abs() <= MAX_ABS && hi.abs() <= MAX_ABS) {
        return Err(PlotError::InvalidRange { lo, hi });
    }
    let bins = series.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    if bins == 0 {
        return Err(PlotError::NoData);
    }
    if let Some((name, c)) = series.iter().find(|(_, c)| c.len() != bins) {
        return Err(PlotError::Shape(format!(
            "series {name:?} has {} bins, expected {bins}",
            c.len()
        )));
    }
    if let Some((name, _)) = series
        .iter()
        .find(|(_, c)| c.iter().any(|v| !(0.0..=MAX_ABS).contains(v)))
    {
        return Err(PlotError::Shape(format!(
            "series {name:?} has a height that is negative or not finite"
        )));
    }
    let top = series.iter().flat_map(|(_, c)| c.iter()).copied().fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.08 } else { 1.0 };
    render(
        &HistPlot {
            labels: [title, x_label, y_label],
            lo,
            hi,
            bins,
            y_max,
            series,
        },
        series.len(),
    )
}

/// Tick label of a segmented axis: the name of the segment whose centre it marks.
fn seg_label(names: &[String], v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

struct ConfusionPlot<'a> {
    title: &'a str,
    classes: &'a [String],
    matrix: &'a [Vec<u64>],
}

/// A confusion cell's fill, for a count that is the share `t` of its row's largest.
fn shade(t: f64) -> RGBColor {
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(lerp(247, 8), lerp(251, 48), lerp(255, 107))
}

impl Plot for ConfusionPlot<'_> {
    fn legend(&self) -> Vec<Entry> {
        [
            (0.0, "none"),
            (0.5, "half the row's largest count"),
            (1.0, "the row's largest count"),
        ]
        .map(|(t, label)| entry(label, Swatch::Fill(shade(t))))
        .to_vec()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let n = self.classes.len();
        let last = n as i32 - 1;
        let longest = self
            .classes
            .iter()
            .map(|c| c.chars().count().min(40))
            .max()
            .unwrap_or(0) as u32;
        let axes = ((0..last).into_segmented(), (0..last).into_segmented());
        let mut chart = frame(root, self.title, (longest * 7 + 30).clamp(40, 160), axes)?;
        // y index 0 is at the bottom, so row r (true class r) is drawn at y = last - r.
        let reversed: Vec<String> = self.classes.iter().rev().cloned().collect();
        let (x_fmt, y_fmt) = (|v: &_| seg_label(self.classes, v), |v: &_| seg_label(&reversed, v));
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh()
            .x_labels(n.min(20))
            .y_labels(n.min(20))
            .x_desc("predicted")
            .y_desc("true");
        mesh.x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(re)?;
        let edge = |i: i32| {
            if i > last {
                SegmentValue::Last
            } else {
                SegmentValue::Exact(i)
            }
        };
        let font_size = (120.0 / n as f64).clamp(7.0, 16.0);
        let centred = Pos::new(HPos::Center, VPos::Center);
        for (r, row) in self.matrix.iter().enumerate() {
            // Shade by the share of the row (recall), so rare classes stay readable.
            let row_max = row.iter().copied().max().unwrap_or(0).max(1) as f64;
            let y = last - r as i32;
            for (x, &count) in (0..).zip(row) {
                let t = count as f64 / row_max;
                let cell = Rectangle::new([(edge(x), edge(y)), (edge(x + 1), edge(y + 1))], shade(t).filled());
                chart.draw_series([cell]).map_err(re)?;
                if n <= 40 {
                    let ink = if t > 0.5 { WHITE } else { BLACK };
                    let style = (FONT, font_size).into_font().color(&ink).pos(centred);
                    let at = (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y));
                    chart
                        .draw_series([Text::new(count.to_string(), at, style)])
                        .map_err(re)?;
                }
            }
        }
        Ok(())
    }
}

/// Confusion-matrix heat map with the counts written in the cells; rows = true class, columns =
/// predicted class. Cells are shaded by their share of the row.
pub fn confusion(title: &str, classes: &[String], matrix: &[Vec<u64>]) -> Result<Chart, PlotError> {
    let n = classes.len();
    if n == 0 {
        return Err(PlotError::NoData);
    }
    if n > MAX_CLASSES {
        return Err(PlotError::Shape(format!(
            "{n} classes is more than the {MAX_CLASSES} a chart can show"
        )));
    }
    if matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
        return Err(PlotError::Shape(format!(
            "confusion matrix must be {n}x{n} for {n} classes"
        )));
    }
    render(&ConfusionPlot { title, classes, matrix }, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }

    /// `lines` with fixed labels.
    fn line(series: &[Series], log_x: bool, marker: Option<(f64, &str)>) -> Result<Chart, PlotError> {
        lines("title", "x", "y", series, log_x, marker)
    }

    fn check(chart: &Chart) {
        let img = image::load_from_memory(&chart.png).expect("PNG decodes").to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        assert!(img.pixels().any(|p| p != img.get_pixel(0, 0)), "flat PNG");
        let svg = chart.svg.trim();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
        assert!(svg.ends_with("</svg>") && svg.contains("<text"));
    }

    /// Series lines are the only `<polyline>`s drawn `SERIES_STROKE` wide: plotters also emits
    /// 1 px polylines for the axes and tick marks, and the marker line is 1 px too.
    fn polylines(svg: &str) -> usize {
        let width = format!("stroke-width=\"{SERIES_STROKE}\"");
        let is_series = |el: &&str| el.split('>').next().is_some_and(|a| a.contains(&width));
        svg.split("<polyline").skip(1).filter(is_series).count()
    }

    fn counts(names: &[&str], bins: u64) -> Vec<(String, Vec<f64>)> {
        let count = |s: u64| (0..bins).map(|b| ((b * (s + 1)) % 47 + 20 * s) as f64).collect();
        names.iter().zip(0..).map(|(n, s)| (n.to_string(), count(s))).collect()
    }

    /// One chart of each kind, with realistic data.
    fn samples() -> [(&'static str, Chart); 5] {
        let epochs = |f: fn(f64) -> f64| (1..=20).map(|e| (e as f64, f(e as f64))).collect::<Vec<_>>();
        let curves = [
            series("train loss", epochs(|e| 2.0 / e)),
            series("val loss", epochs(|e| 2.2 / e + 0.1)),
            series("train acc", epochs(|e| 1.0 - 0.5 / e)),
            series("val acc", epochs(|e| 0.95 - 0.5 / e)),
        ];
        let mut lr: Vec<(f64, f64)> = (0..60)
            .map(|i| (1e-6 * 1.3f64.powi(i), 2.0 - (i as f64 / 30.0).sin()))
            .collect();
        lr.extend([(0.0, 1.0), (-1.0, 1.0), (f64::NAN, 1.0), (1e-3, f64::INFINITY)]);
        let classes = ["cat", "dog", "bird"].map(String::from);
        let matrix = [vec![50, 3, 2], vec![4, 40, 6], vec![0, 7, 33]];
        [
            (
                "lines",
                lines("Training & <curves>", "epoch", "", &curves, false, None).unwrap(),
            ),
            (
                "lr",
                lines(
                    "LR range test",
                    "lr",
                    "loss",
                    &[series("loss", lr)],
                    true,
                    Some((3e-4, "3e-4")),
                )
                .unwrap(),
            ),
            (
                "hist",
                histogram("P(cat)", "p", "images", 0.0, 1.0, &counts(&["cat", "dog", "bird"], 10)).unwrap(),
            ),
            (
                "pixels",
                histogram("pixels", "value", "%", 0.0, 255.0, &counts(&["R", "G", "B"], 256)).unwrap(),
            ),
            ("confusion", confusion("Confusion", &classes, &matrix).unwrap()),
        ]
    }

    #[test]
    fn every_chart_renders_png_and_svg() {
        let charts = samples();
        charts.iter().for_each(|(_, chart)| check(chart));
        let [lines, lr, hist, pixels, conf] = charts.map(|(_, c)| c);
        assert_eq!((lines.series, polylines(&lines.svg)), (4, 4));
        assert!(
            ["train loss", "val loss", "train acc", "val acc"]
                .iter()
                .all(|s| lines.svg.contains(s))
        );
        assert!(lines.svg.contains("Training &amp; &lt;curves&gt;"), "title is escaped");
        // log_x with x <= 0, NaN and inf points: the series still draws, plus the 1 px marker line.
        assert_eq!((lr.series, polylines(&lr.svg)), (1, 1));
        assert!(lr.svg.contains("3e-4"), "the marker is named in the legend");
        assert_eq!(hist.series, 3);
        assert_eq!(
            hist.svg.matches("<rect").count(),
            29 + 1 + 3,
            "bars (one of the 30 is empty) + background + legend swatches"
        );
        // 256 bins x 3 series are drawn as step outlines, one polyline per series.
        assert_eq!((pixels.series, polylines(&pixels.svg)), (3, 3));
        assert_eq!(conf.series, 3);
        assert!(
            ["50", "40", "33", "7"]
                .iter()
                .all(|c| conf.svg.contains(&format!(">\n{c}\n</text>")))
        );
    }

    /// The y coordinates an SVG fragment draws at: `y`/`cy` attributes and polyline points.
    fn ys(svg: &str) -> Vec<f64> {
        let mut out = Vec::new();
        for attr in [" y=\"", " cy=\""] {
            for part in svg.split(attr).skip(1) {
                out.extend(part.split('"').next().and_then(|v| v.parse::<f64>().ok()));
            }
        }
        for part in svg.split(" points=\"").skip(1) {
            let points = part.split('"').next().unwrap_or("");
            out.extend(
                points
                    .split_whitespace()
                    .filter_map(|p| p.split(',').nth(1)?.parse::<f64>().ok()),
            );
        }
        out
    }

    #[test]
    fn every_legend_sits_in_a_strip_under_the_data() {
        for (name, chart) in samples() {
            let (plot, legend) = chart.svg.split_once("<g class=\"legend\">").expect("a legend group");
            let legend_ys = ys(legend);
            assert!(!legend_ys.is_empty(), "{name}: the legend draws");
            let top = legend_ys.iter().copied().fold(f64::INFINITY, f64::min);
            assert!(top > HEIGHT as f64 / 2.0, "{name}: the legend is at the bottom ({top})");
            // Every series point and bar starts above the legend strip.
            let series: Vec<&str> = plot
                .split('<')
                .filter(|el| {
                    el.contains(&format!("stroke-width=\"{SERIES_STROKE}\"")) || el.contains("opacity=\"0.85\"")
                })
                .collect();
            assert!(!series.is_empty() || name == "confusion", "{name}: series found");
            for el in series {
                for y in ys(&format!(" {el}")) {
                    assert!(
                        y < top - 4.0,
                        "{name}: a series point at y={y} reaches the legend at {top}"
                    );
                }
            }
        }
        // Many entries wrap into rows inside the chart's width.
        let many: Vec<Entry> = (0..12)
            .map(|i| entry(format!("series number {i}"), Swatch::Fill(color(i))))
            .collect();
        let at = legend_layout(&many);
        assert!(at.last().unwrap().1 >= 2, "{at:?}");
        for (e, (x, _)) in many.iter().zip(&at) {
            assert!(x + 38 + label_width(&e.label) <= WIDTH as i32 - MARGIN + 18, "{at:?}");
        }
        assert_eq!(legend_height(&[]), 0);
    }

    #[test]
    fn flat_single_point_and_extreme_series_work() {
        let flat = series("flat", (0..10).map(|i| (i as f64, 0.5)).collect());
        let chart = line(&[flat, series("one", vec![(3.0, 0.5)])], false, None).unwrap();
        check(&chart);
        assert_eq!(chart.series, 2);
        check(&line(&[series("zero", vec![(1.0, 0.0), (1.0, 0.0)])], true, None).unwrap());
        let huge = [series(
            "huge",
            vec![(-1e300, 1e300), (1e300, -1e300), (1e-300, 1e-300), (f64::MAX, 0.0)],
        )];
        check(&line(&huge, false, Some((0.0, ""))).unwrap());
        let wide = [series("wide", vec![(1e-150, 1.0), (1e150, 2.0)])];
        check(&line(&wide, true, Some((1e-100, "lo"))).unwrap());
        // 600 decades (1e-300..1e300) cannot be a log axis: an error, not a hang.
        assert!(matches!(line(&huge, true, None), Err(PlotError::InvalidRange { .. })));
        check(&histogram("", "", "", -1.0, 1.0, &[("zeros".into(), vec![0.0; 4])]).unwrap());
        check(&confusion("", &["only".into()], &[vec![0]]).unwrap());
        let (names, diag): (Vec<String>, Vec<Vec<u64>>) = (0..60)
            .map(|i| {
                (
                    format!("class {i}"),
                    (0..60).map(|j| u64::from(i == j) * 9 + 1).collect(),
                )
            })
            .unzip();
        let big = confusion("60 classes", &names, &diag).unwrap();
        check(&big);
        assert!(!big.svg.contains(">\n10\n</text>"), "no counts written in tiny cells");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let nan = series("nan", vec![(f64::NAN, 1.0), (1.0, f64::NAN), (f64::INFINITY, 2.0)]);
        assert_eq!(
            line(std::slice::from_ref(&nan), false, None).unwrap_err(),
            PlotError::NoData
        );
        assert_eq!(line(&[], false, Some((1.0, "m"))).unwrap_err(), PlotError::NoData);
        assert_eq!(
            line(&[series("neg", vec![(0.0, 1.0), (-2.0, 1.0)])], true, None).unwrap_err(),
            PlotError::NoData
        );
        // A series without finite points is counted but drawn empty.
        let chart = line(&[nan, series("ok", vec![(1.0, 1.0), (2.0, 3.0)])], false, None).unwrap();
        assert_eq!((chart.series, polylines(&chart.svg)), (2, 1));
        let h = counts(&["a", "b"], 4);
        assert!(matches!(
            histogram("", "", "", 1.0, 1.0, &h),
            Err(PlotError::InvalidRange { .. })
        ));
        assert!(matches!(
            histogram("", "", "", 0.0, f64::NAN, &h),
            Err(PlotError::InvalidRange { .. })
        ));
        assert_eq!(histogram("", "", "", 0.0, 1.0, &[]).unwrap_err(), PlotError::NoData);
        let ragged = [("a".into(), vec![1.0, 2.0]), ("b".into(), vec![1.0])];
        assert!(matches!(
            histogram("", "", "", 0.0, 1.0, &ragged),
            Err(PlotError::Shape(_))
        ));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let h = [("a".to_string(), vec![1.0, bad])];
            assert!(matches!(histogram("", "", "", 0.0, 1.0, &h), Err(PlotError::Shape(_))));
        }
        let classes = ["a".to_string(), "b".to_string()];
        assert!(matches!(
            confusion("", &classes, &[vec![1, 2]]),
            Err(PlotError::Shape(_))
        ));
        assert_eq!(confusion("", &[], &[]).unwrap_err(), PlotError::NoData);
        let many: Vec<String> = (0..=MAX_CLASSES).map(|i| i.to_string()).collect();
        let square = vec![vec![1; many.len()]; many.len()];
        assert!(matches!(confusion("", &many, &square), Err(PlotError::Shape(_))));
        assert!(matches!(
            histogram("", "", "", -f64::MAX, f64::MAX, &h),
            Err(PlotError::InvalidRange { .. })
        ));
        assert_eq!(PlotError::NoData.to_string(), "nothing to plot: no finite data points");
    }

    #[test]
    #[ignore = "writes the sample charts to $PLOTS_OUT (default /tmp/plots) for a visual check"]
    fn write_samples() {
        let dir = std::path::PathBuf::from(std::env::var("PLOTS_OUT").unwrap_or_else(|_| "/tmp/plots".into()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, chart) in samples() {
            std::fs::write(dir.join(format!("{name}.svg")), chart.svg).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), chart.png).unwrap();
        }
    }
}
