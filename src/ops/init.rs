//! `pipeline init DIR`: a practitioner's first minute. Looks at a folder of images and writes
//! a commented pipeline file that runs as written: the label layout found ([`Layout`]), the
//! classes and their counts, the image sizes seen with a suggested `resize.size`, and the
//! example's training recipe. The file is planned (every check `run` makes before it starts)
//! before it is written, and is never written over an existing file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::decode::header_dimensions;
use crate::data::walk::{Listings, walk};
use crate::pipeline::plan;

/// The extensions `ingest` reads by default.
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// Headers read to report the image sizes (spread evenly over the folder).
const SIZE_SAMPLE: usize = 256;
/// Fewer images than this in a class get a warning: the split may leave a partition without it.
const FEW: u64 = 10;
/// The largest side suggested for `resize.size`: the CNN below trains on CPU in minutes there.
const MAX_SUGGESTED: u32 = 64;

/// How the folder says which class an image is.
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// `cat.12.jpg`: the name up to the first dot.
    Prefix,
    /// `cat/12.jpg`: the folder holding the file.
    Folder,
    /// `train/cat/12.jpg`, `val/…`, `test/…`: split already, then class folders.
    SplitFolders,
    /// A `path,label` file at the top of the folder.
    Csv(PathBuf),
}

impl Layout {
    fn describe(&self) -> String {
        match self {
            Layout::Prefix => "class name before the first dot (`cat.12.jpg` -> cat)".into(),
            Layout::Folder => "one folder per class (`cat/12.jpg` -> cat)".into(),
            Layout::SplitFolders => "already split: train/, val/, test/ with one folder per class inside".into(),
            Layout::Csv(p) => format!("labels from {}", p.display()),
        }
    }
}

/// Looks at the images under `dir` and writes the pipeline file `out` (whose folder is created
/// if needed); `out` must not exist. Prints what it found and the next command to `w`, and
/// returns the file written.
pub fn init(dir: &Path, out: &Path, w: &mut dyn Write) -> Result<PathBuf> {
    let exts: Vec<String> = EXTENSIONS.iter().map(|e| e.to_string()).collect();
    let found = walk(dir, &exts, &Listings::default())?;
    let mut warnings = Vec::new();
    let mut images = Vec::new();
    for (rel, stat) in found {
        match stat {
            Ok(_) => images.push(rel),
            Err(why) => warnings.push(format!("{rel}: cannot be read ({why}); `run` will stop on it")),
        }
    }
    if images.is_empty() {
        bail!(
            "no images in {} (looked for files ending in .{})",
            dir.display(),
            EXTENSIONS.join(", .")
        );
    }
    let layout = detect(dir, &images)?;
    let classes = count_classes(dir, &layout, &images)?;
    if classes.len() < 2 {
        bail!(
            "{} holds one class only ({}); a classifier needs at least two: {}",
            dir.display(),
            classes.keys().next().map_or("", String::as_str),
            HOW_TO_LABEL
        );
    }
    for (c, n) in &classes {
        if *n < FEW {
            warnings.push(format!(
                "class `{c}` has {n} image(s): the split may leave val or test without it (validate will say so)"
            ));
        }
    }
    let sizes = Sizes::read(dir, &images, &mut warnings);
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let from = std::fs::canonicalize(parent)?;
    let data = relative(&from, &std::fs::canonicalize(dir)?);
    let name = pipeline_name(dir);
    let file = out.to_path_buf();
    let survey = Survey {
        layout,
        classes,
        sizes,
        images: images.len(),
    };
    let yaml = render(&name, &file, &data, &from, &survey);
    let Survey {
        layout, classes, sizes, ..
    } = survey;
    if let Err(e) = plan::load_source(&file, &yaml, &[]) {
        bail!(
            "the pipeline init would write does not plan; nothing was written:\n{}",
            e.rendered
        );
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .with_context(|| format!("cannot create {} (init never writes over a file)", file.display()))?;
    f.write_all(yaml.as_bytes())?;
    writeln!(w, "wrote {}", file.display())?;
    writeln!(w, "  layout: {}", layout.describe())?;
    let counts: Vec<String> = classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    writeln!(
        w,
        "  {} images in {} classes: {}",
        images.len(),
        classes.len(),
        counts.join(", ")
    )?;
    writeln!(w, "  sizes: {}; resize.size {:?}", sizes.describe(), sizes.suggested())?;
    for warning in &warnings {
        writeln!(w, "warning: {warning}")?;
    }
    writeln!(w, "next: pipeline run {}", file.display())?;
    Ok(file)
}

const HOW_TO_LABEL: &str = "put the images in one folder per class (`cat/1.jpg`, `dog/2.jpg`), name them \
                            `class.N.jpg`, or add a `labels.csv` of `path,label` lines";

/// Which layout the relative image paths (and a label file beside them) show.
fn detect(dir: &Path, images: &[String]) -> Result<Layout> {
    if let Some(csv) = label_file(dir)? {
        return Ok(Layout::Csv(csv));
    }
    let depth = |rel: &str| rel.split('/').count();
    let at_top = images.iter().filter(|r| depth(r) == 1).count();
    if at_top == images.len() {
        let labels: std::collections::BTreeSet<&str> = images.iter().map(|r| prefix_label(r)).collect();
        if labels.len() * 2 > images.len() || images.iter().any(|r| !file_stem(r).contains('.')) {
            bail!(
                "cannot tell the classes of the images in {}: their names do not start with a class \
                 (e.g. {}); {HOW_TO_LABEL}",
                dir.display(),
                images[0]
            );
        }
        return Ok(Layout::Prefix);
    }
    if at_top > 0 {
        let example = images.iter().find(|r| depth(r) == 1).map_or("", String::as_str);
        bail!(
            "{} mixes images at its top ({example}) with images in folders; {HOW_TO_LABEL}",
            dir.display()
        );
    }
    let split_names = ["train", "val", "valid", "test"];
    let first = |rel: &str| rel.split('/').next().unwrap_or("").to_ascii_lowercase();
    let split = images
        .iter()
        .all(|r| depth(r) >= 3 && split_names.contains(&first(r).as_str()))
        && images.iter().any(|r| first(r) == "train");
    Ok(if split { Layout::SplitFolders } else { Layout::Folder })
}

/// A `*.csv` at the top of `dir` whose first line names an image in `dir` (`labels.csv`
/// first).
fn label_file(dir: &Path) -> Result<Option<PathBuf>> {
    let mut csvs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
        .collect();
    csvs.sort_by_key(|p| (p.file_name().is_none_or(|n| n != "labels.csv"), p.clone()));
    Ok(csvs.into_iter().find(|p| {
        read_labels(p)
            .ok()
            .and_then(|rows| rows.first().cloned())
            .is_some_and(|(path, _)| dir.join(path).is_file())
    }))
}

/// The `path,label` rows of a label file (a `path,label` header skipped), as `ingest` reads it.
fn read_labels(csv: &Path) -> Result<Vec<(String, String)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(csv)?;
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec?;
        if rec.len() != 2 {
            bail!("{}:{}: expected `path,label`", csv.display(), i + 1);
        }
        if i == 0 && &rec[0] == "path" && &rec[1] == "label" {
            continue;
        }
        rows.push((rec[0].trim_start_matches("./").to_string(), rec[1].to_string()));
    }
    Ok(rows)
}

fn file_stem(rel: &str) -> &str {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.rsplit_once('.').map_or(name, |(stem, _)| stem)
}

/// `ingest`'s `labels: prefix`: the file name up to the first dot.
fn prefix_label(rel: &str) -> &str {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.split('.').next().unwrap_or(name)
}

/// Images per class, by the rule `ingest` will apply.
fn count_classes(dir: &Path, layout: &Layout, images: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    match layout {
        Layout::Csv(csv) => {
            for (_, label) in read_labels(csv).with_context(|| format!("reading {}", csv.display()))? {
                *classes.entry(label).or_default() += 1;
            }
        }
        Layout::Prefix => images
            .iter()
            .for_each(|r| *classes.entry(prefix_label(r).into()).or_default() += 1),
        Layout::Folder | Layout::SplitFolders => images.iter().for_each(|r| {
            let folder = r.rsplit('/').nth(1).unwrap_or_default();
            *classes.entry(folder.into()).or_default() += 1;
        }),
    }
    if classes.is_empty() {
        bail!("no labelled images in {}", dir.display());
    }
    Ok(classes)
}

/// What the folder holds.
struct Survey {
    layout: Layout,
    classes: BTreeMap<String, u64>,
    sizes: Sizes,
    images: usize,
}

/// Image sizes from the headers of a sample.
struct Sizes {
    /// (height, width) of each readable header.
    seen: Vec<(u32, u32)>,
    sampled: usize,
}

impl Sizes {
    fn read(dir: &Path, images: &[String], warnings: &mut Vec<String>) -> Sizes {
        let step = images.len().div_ceil(SIZE_SAMPLE).max(1);
        let mut seen = Vec::new();
        let mut sampled = 0;
        for rel in images.iter().step_by(step) {
            sampled += 1;
            match header_dimensions(&dir.join(rel)) {
                Ok((w, h)) => seen.push((h, w)),
                Err(why) => warnings.push(format!("{rel}: not a readable image ({why}); `run` will stop on it")),
            }
        }
        Sizes { seen, sampled }
    }

    fn median(mut v: Vec<u32>) -> u32 {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    fn describe(&self) -> String {
        if self.seen.is_empty() {
            return "no readable header".into();
        }
        let hs: Vec<u32> = self.seen.iter().map(|s| s.0).collect();
        let ws: Vec<u32> = self.seen.iter().map(|s| s.1).collect();
        let (min, max) = (self.seen.iter().min().copied(), self.seen.iter().max().copied());
        let same = min == max;
        let mut s = format!(
            "median {}x{} (height x width)",
            Self::median(hs.clone()),
            Self::median(ws.clone())
        );
        if same {
            s = format!("all {}x{}", hs[0], ws[0]);
        } else {
            let _ = write!(
                s,
                ", heights {}..{}, widths {}..{}",
                hs.iter().min().unwrap_or(&0),
                hs.iter().max().unwrap_or(&0),
                ws.iter().min().unwrap_or(&0),
                ws.iter().max().unwrap_or(&0)
            );
        }
        let _ = write!(s, " ({} of {} headers read)", self.seen.len(), self.sampled);
        s
    }

    /// A square size no larger than the typical image's shorter side, a multiple of 8 from
    /// 16 up to [`MAX_SUGGESTED`].
    fn suggested(&self) -> [u32; 2] {
        let short = Self::median(self.seen.iter().map(|(h, w)| (*h).min(*w)).collect());
        let s = if short == 0 {
            32
        } else if short < 16 {
            short
        } else {
            (short.min(MAX_SUGGESTED) / 8) * 8
        };
        [s, s]
    }
}

/// A pipeline name from the folder's name: letters, digits, `-`, `_` and `.` only.
fn pipeline_name(dir: &Path) -> String {
    let base = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.trim_matches('_').is_empty() {
        "images".into()
    } else {
        name
    }
}

/// `to` relative to the folder `from` (both absolute), with `..` where needed.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (a, b): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// A YAML scalar in double quotes (JSON's string syntax is YAML's too).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The pipeline file's text.
fn render(name: &str, file: &Path, data: &Path, file_dir: &Path, survey: &Survey) -> String {
    let Survey {
        layout,
        classes,
        sizes,
        images,
    } = survey;
    let data_text = data.to_string_lossy();
    let counts: Vec<String> = classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let class_list: Vec<String> = classes.keys().map(|c| quoted(c)).collect();
    let labels = match layout {
        Layout::Prefix => "    labels: prefix               # cat.12.jpg -> class \"cat\"\n".to_string(),
        Layout::Folder | Layout::SplitFolders => {
            "    labels: folder               # the folder holding the file: cat/12.jpg -> \"cat\"\n".to_string()
        }
        Layout::Csv(csv) => format!(
            "    labels: csv\n    csv: {}   # `path,label` lines; paths relative to `path`\n",
            quoted(&relative(file_dir, &std::fs::canonicalize(csv).unwrap_or(csv.clone())).to_string_lossy())
        ),
    };
    let split = match layout {
        Layout::SplitFolders => {
            "    method: folder               # train/, val/ (or valid/), test/ as the folders say\n".to_string()
        }
        _ => "    train: 0.7\n    val: 0.15\n    test: 0.15\n".to_string(),
    };
    let [h, w] = sizes.suggested();
    format!(
        "# Written by `pipeline init` for the {images} images in {data_text} (relative to this file).
#
#   pipeline run {file}
#
# Found: {layout}; {n} classes: {counts}.
# Image sizes: {sizes_text}.
# Every value below can be changed here or for one run: --set resize.size=[64,64]
name: {name}
seed: 42

stages:
  ingest:
    kind: ingest
    path: {path}   # relative to this file
{labels}    classes: [{class_list}]

  split:
    kind: split
    input: ingest
{split}
  resize:
    kind: resize
    input: split
    size: [{h}, {w}]               # [height, width]; larger sizes keep more detail and train slower on CPU
    filter: bilinear             # cv2.resize's default (INTER_LINEAR)
    mode: stretch                # or crop (keep the aspect ratio, centre crop) or pad

  normalize:
    kind: normalize
    input: resize
    method: per_image            # each image minus its mean, divided by its std

  validate:
    kind: validate
    input: normalize             # refuses leakage, missing classes, bad values before training

  # A small CNN trained with Adam on flipped and shifted copies of the training images (as
  # pipelines/cats_dogs_small.yaml): quick on CPU at any size. The example's ResNet recipe
  # (pipelines/cats_dogs.yaml: model resnet, SGD one-cycle, flip TTA) is more accurate and
  # about 4x slower. `pipeline diagnose {file}` says why, if it predicts one class.
  train:
    kind: train
    input: validate
    model: cnn
    blocks: [16, 32]             # conv channels per block
    hidden: [64]
    activation: relu
    init: he
    optimizer: adam
    lr: 0.001
    epochs: 40
    batch_size: 64
    l2: 0.001
    augment: [hflip, crop_pad]   # train rows only

  evaluate:
    kind: evaluate
    input: train                 # scores val and test separately
",
        file = file.display(),
        layout = layout.describe(),
        n = classes.len(),
        counts = counts.join(", "),
        sizes_text = sizes.describe(),
        path = quoted(&data_text),
        class_list = class_list.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        assert_eq!(
            relative(Path::new("/a/b/pipelines"), Path::new("/a/b/data/x")),
            PathBuf::from("../data/x")
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), PathBuf::from("."));
        assert_eq!(relative(Path::new("/a/b"), Path::new("/c")), PathBuf::from("../../c"));
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(prefix_label("cat.12.jpg"), "cat");
        assert_eq!(file_stem("x/cat.12.jpg"), "cat.12");
        assert_eq!(quoted("a \"b\""), "\"a \\\"b\\\"\"");
    }

    #[test]
    fn suggested_sizes_are_multiples_of_8_up_to_the_cap() {
        let s = |seen: Vec<(u32, u32)>| {
            Sizes {
                sampled: seen.len(),
                seen,
            }
            .suggested()
        };
        assert_eq!(s(vec![(375, 500); 3]), [64, 64]);
        assert_eq!(s(vec![(32, 32)]), [32, 32]);
        assert_eq!(s(vec![(45, 60)]), [40, 40]);
        assert_eq!(s(vec![(12, 20)]), [12, 12]);
        assert_eq!(s(Vec::new()), [32, 32]);
    }
}
