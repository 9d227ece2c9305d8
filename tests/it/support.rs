//! A small builder for integration tests: a temporary project with images and a pipeline
//! file, a way to run the `pipeline` binary in it like a user would, and the assertions on
//! what it printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::{Array, RecordBatch, StringArray};

/// Asserts that `haystack` (any text) contains `needle`; on failure prints both, and the
/// optional message after them (format arguments as for `assert!`).
macro_rules! assert_contains {
    ($haystack:expr, $needle:expr $(,)?) => {
        assert_contains!($haystack, $needle, "")
    };
    ($haystack:expr, $needle:expr, $($msg:tt)+) => {{
        let (haystack, needle) = (&$haystack, &$needle);
        let (haystack, needle): (&str, &str) = (haystack.as_ref(), needle.as_ref());
        assert!(
            haystack.contains(needle),
            "expected to find {needle:?} in:\n{haystack}\n{}",
            format_args!($($msg)+)
        );
    }};
}

/// Asserts that `haystack` does not contain `needle`; on failure prints both.
macro_rules! assert_not_contains {
    ($haystack:expr, $needle:expr $(,)?) => {
        assert_not_contains!($haystack, $needle, "")
    };
    ($haystack:expr, $needle:expr, $($msg:tt)+) => {{
        let (haystack, needle) = (&$haystack, &$needle);
        let (haystack, needle): (&str, &str) = (haystack.as_ref(), needle.as_ref());
        assert!(
            !haystack.contains(needle),
            "expected no {needle:?} in:\n{haystack}\n{}",
            format_args!($($msg)+)
        );
    }};
}

pub struct Project {
    dir: tempfile::TempDir,
}

/// What a run printed and how it exited.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    /// The line of stdout that starts with a stage name.
    pub fn line(&self, stage: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| !l.starts_with(' ') && l.split_whitespace().next() == Some(stage))
            .unwrap_or_else(|| panic!("no line for stage `{stage}` in:\n{}", self.stdout))
    }

    pub fn ran(&self, stage: &str) -> bool {
        self.line(stage).split_whitespace().nth(1) == Some("ran")
    }

    pub fn cached(&self, stage: &str) -> bool {
        self.line(stage).split_whitespace().nth(1) == Some("cached")
    }

    /// The number of the kill point `what` in a run with `PIPELINE_KILL_TRACE=1` (its
    /// stderr lists `kill point N: what`), for `PIPELINE_KILL_AT`.
    pub fn kill_point(&self, what: &str) -> String {
        self.stderr
            .lines()
            .find(|l| l.ends_with(what))
            .and_then(|l| l.strip_prefix("kill point ")?.split(':').next())
            .unwrap_or_else(|| panic!("no kill point `{what}` in:\n{}", self.stderr))
            .to_string()
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

impl Project {
    pub fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, contents: &str) -> &Self {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
        self
    }

    /// Writes a deterministic, textured RGB PNG (distinct per `seed`).
    pub fn image(&self, rel: &str, w: u32, h: u32, seed: u32) -> &Self {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let v = x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(2654435761);
            image::Rgb([(v % 251) as u8, ((v >> 3) % 253) as u8, ((x + y + seed) % 256) as u8])
        });
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        img.save(&p).unwrap();
        self
    }

    /// `n` images per class named like Kaggle's `cat.12.png` in `images/`.
    pub fn kaggle_images(&self, classes: &[&str], n: u32) -> &Self {
        for (c, class) in classes.iter().enumerate() {
            for i in 0..n {
                self.image(
                    &format!("images/{class}.{i}.png"),
                    20 + (i % 5),
                    16 + (i % 3),
                    c as u32 * 1000 + i,
                );
            }
        }
        self
    }

    pub fn pipeline(&self, yaml: &str) -> &Self {
        self.write("pipeline.yaml", yaml)
    }

    /// Runs `pipeline ARGS...` in the project directory.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs `pipeline ARGS...` in the project directory with extra environment variables.
    /// A run killed by a signal exits with code -1.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        // The shipped photos live outside the temporary projects: allow reading them.
        let data = format!("{}/data", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(args)
            .env("PIPELINE_DATA_ROOTS", data)
            .envs(env.iter().copied())
            .current_dir(self.root())
            .output()
            .expect("run pipeline");
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }

    /// The data file of the artifact `stage` of pipeline `name` produced last.
    pub fn artifact_path(&self, name: &str, stage: &str) -> PathBuf {
        let pointer = self.path(&format!("cache/pipelines/{name}/{stage}.json"));
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&pointer).unwrap()).unwrap();
        let fp = v["fingerprint"].as_str().unwrap();
        self.path(&format!("cache/artifacts/{fp}.arrow"))
    }

    pub fn read_artifact(&self, name: &str, stage: &str) -> Vec<RecordBatch> {
        let f = fs::File::open(self.artifact_path(name, stage)).unwrap();
        arrow_ipc::reader::FileReader::try_new(f, None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    /// A string column of an artifact, all batches concatenated.
    pub fn column(&self, name: &str, stage: &str, column: &str) -> Vec<String> {
        let mut out = Vec::new();
        for b in self.read_artifact(name, stage) {
            let col = b.column_by_name(column).unwrap();
            let s = col.as_any().downcast_ref::<StringArray>().unwrap();
            out.extend((0..s.len()).map(|i| s.value(i).to_string()));
        }
        out
    }
}

/// A temp project running the shipped example pipeline (`pipelines/cats_dogs.yaml` on
/// `data/cats_dogs/`) up to `validate`, with its cache inside the project; already run once.
pub fn example_project() -> (Project, Run) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let p = Project::new();
    // Training the example's ResNet takes about a minute in a release build; these tests
    // check the data stages (.ci/run trains the whole example in release).
    let full = fs::read_to_string(format!("{repo}/pipelines/cats_dogs.yaml")).unwrap();
    let yaml = full
        .split("\n  train:")
        .next()
        .unwrap()
        .to_string()
        .replace("path: ../data/cats_dogs", &format!("path: {repo}/data/cats_dogs"))
        .replace("name: cats_dogs", "name: cats_dogs\ncache: cache");
    p.pipeline(&yaml);
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    (p, run)
}

/// Runs a Python script of `tests/python/` (its packages come from scripts/test.sh).
pub fn python(script: &str, args: &[&str]) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{repo}/tests/python/{script}"))
        .args(args)
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed (run scripts/test.sh, which installs its packages):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The data stages most tests use: ingest `images/`, split, 8x8 pixels, fitted mean,
/// per-image standardization.
macro_rules! data_stages {
    () => {
        "  ingest:
    kind: ingest
    path: images
  split:
    kind: split
    train: 0.6
    val: 0.2
    test: 0.2
  resize:
    kind: resize
    size: [8, 8]
  mean_subtract:
    kind: mean_subtract
    mean: fit
  normalize:
    kind: normalize
    method: per_image
"
    };
}

/// A pipeline of the data stages.
pub const BASIC: &str = concat!("name: t\nseed: 7\nstages:\n", data_stages!());

impl Project {
    /// `n` images per class that a small model can tell apart: cats are bright on the left,
    /// dogs on the right, with seeded noise.
    pub fn learnable_images(&self, n: u32) -> &Self {
        for (c, class) in ["cat", "dog"].iter().enumerate() {
            for i in 0..n {
                let img = image::RgbImage::from_fn(12, 12, |x, y| {
                    let noise = (x * 7 + y * 13 + i * 31 + c as u32 * 101).wrapping_mul(2654435761) >> 24;
                    let bright = if (x < 6) == (c == 0) { 170 } else { 60 };
                    let v = (bright + noise % 60) as u8;
                    image::Rgb([v, v.wrapping_add(y as u8), v / 2 + 20])
                });
                let p = self.path(&format!("images/{class}.{i}.png"));
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                img.save(&p).unwrap();
            }
        }
        self
    }

    /// The record of the artifact pipeline `name`'s stage produced last.
    pub fn record(&self, name: &str, stage: &str) -> serde_json::Value {
        self.artifact_json(name, stage, "json")
    }

    /// The JSON report of a report stage (`validate`, `evaluate`) of pipeline `name`.
    pub fn report(&self, name: &str, stage: &str) -> serde_json::Value {
        self.artifact_json(name, stage, "report.json")
    }

    /// The file `artifacts/<fingerprint>.<ext>` of the artifact pipeline `name`'s stage
    /// produced last, parsed.
    fn artifact_json(&self, name: &str, stage: &str, ext: &str) -> serde_json::Value {
        let pointer = self.path(&format!("cache/pipelines/{name}/{stage}.json"));
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&pointer).unwrap()).unwrap();
        let fp = v["fingerprint"].as_str().unwrap();
        serde_json::from_str(&fs::read_to_string(self.path(&format!("cache/artifacts/{fp}.{ext}"))).unwrap()).unwrap()
    }
}

/// The data stages with a lenient `validate` (the generated images are tiny and alike), for
/// training tests.
pub const TRAIN_DATA: &str = concat!(
    "name: m\nseed: 3\nstages:\n",
    data_stages!(),
    "  validate:\n    kind: validate\n    max_class_ratio: 10\n    drift_js: 1\n    drift_linf: 1\n    near_duplicate: 1.0\n"
);
