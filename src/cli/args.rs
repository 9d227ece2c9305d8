//! The command line's definitions: every subcommand and flag, parsed by clap. The code that
//! runs a command is in [`crate::cli::commands`] and takes these parsed values.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use crate::cli::values::{check_names, set_names, stage_names};

use crate::pipeline::dag;

#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    version,
    about = "Build an image classifier from one YAML file: ingest, split, preprocess, validate, \
             train and evaluate as cached stages, with the same preprocessing for every partition",
    after_help = "Start here:\n  \
                  pipeline init data/my_photos               write a pipeline file for a folder of images\n  \
                  pipeline run pipelines/my_photos.yaml      run it (stages already cached are reused)\n  \
                  pipeline report pipelines/my_photos.yaml   one HTML page: the DAG, metrics, diagnosis\n\n\
                  `pipeline help COMMAND` for one command; the YAML reference is in README.md."
)]
pub struct Cli {
    /// Print tracing detail on stderr (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Look at a folder of images and write a commented pipeline file that runs as written
    /// (label layout, classes, image sizes, the example's training recipe).
    Init(InitArgs),
    /// Run every stale stage, reuse the rest.
    Run(RunArgs),
    /// Show each stage as fresh or stale, and why.
    Status(StatusArgs),
    /// Parse and plan only; report every problem.
    Check(CheckArgs),
    /// Show how every artifact was made and what it holds, per partition; exit 1 on any
    /// inconsistency.
    Audit(AuditArgs),
    /// Classify images with the trained model, through the same preprocessing and frozen
    /// fitted params as its training data.
    Predict(PredictArgs),
    /// Serve the trained model over HTTP: POST an image to /predict for its class and
    /// probabilities, through the same preprocessing as `predict`.
    Serve(ServeArgs),
    /// Find out why the classifier predicts one class: run the checklist (data, loss at
    /// init, input-independent baseline, overfitting tiny sets, learning-rate range test, L2
    /// penalty's share, learning curve, activations and gradients, prediction spread) on the cached data with
    /// the `train` stage's own model and hyperparameters, then rank the findings.
    Diagnose(DiagnoseArgs),
    /// Write one self-contained HTML page: the DAG and each stage's status, params,
    /// fingerprint, rows and time; the audit and validate results; the metrics; the
    /// diagnosis and its figures (also written as PNG and SVG beside the page).
    Report(ReportArgs),
    /// Look into the cache of a pipeline: `ls`, `du`, `verify` every artifact against its
    /// recorded checksums (exit 1 when any is damaged), or `gc`: remove what none of the
    /// given pipeline files needs.
    Cache(CacheArgs),
    /// Write a dataset stage's rows and pixels (as its readers see them) to one standalone
    /// Arrow IPC file, for pyarrow, polars or numpy.
    Export(ExportArgs),
    /// Print the stage graph.
    Dag(DagArgs),
    /// Print the script that registers shell completions (subcommands, flags, and the
    /// stage and param names of the pipeline file on the line): e.g. add
    /// `source <(pipeline completions bash)` to ~/.bashrc.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a folder.
    Man(ManArgs),
}

/// The pipeline file a command reads, and the `--set` overrides applied to it.
#[derive(Args, Debug)]
pub struct Target {
    /// The pipeline file (YAML), e.g. `pipelines/cats_dogs.yaml`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Override a param as if the file said it: `stage.param=value`, the value in YAML
    /// syntax (`--set resize.size=[64,64]`, `--set train.lr=0.01`; `null` removes the param);
    /// repeatable. It changes the stage's fingerprint like an edit to the file would.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE", add = ArgValueCompleter::new(set_names))]
    pub sets: Vec<String>,
    /// Use this cache instead of the file's `cache:` and `PIPELINE_CACHE`: a folder, or a
    /// shared cache on S3-compatible object storage (`s3://bucket/prefix`, endpoint and
    /// credentials from the AWS variables) whose artifacts are copied into the project's
    /// `cache/`.
    #[arg(long = "cache", value_name = "DIR|URL")]
    pub cache: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The folder of images.
    pub dir: PathBuf,
    /// The pipeline file to write (default: `pipelines/<folder name>.yaml`); never
    /// overwritten.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    /// Run only this stage and what it needs (repeatable).
    #[arg(long = "stage", value_name = "NAME", add = ArgValueCompleter::new(stage_names))]
    pub stages: Vec<String>,
    /// Recompute NAME even if cached, or every stage when no NAME is given.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "", add = ArgValueCompleter::new(stage_names))]
    pub force: Option<String>,
    /// Worker threads for decoding and pixel work (default: all cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Do the per-image stages (ingest, split, resize) for shard I of N only (`0/4` …
    /// `3/4`; a file's shard is a hash of its path), as parts a later run without
    /// `--shard` merges; `auto` takes I and N from a Slurm array task, `auto/N` I from
    /// Kubernetes' JOB_COMPLETION_INDEX (or Slurm's task id).
    #[arg(long, value_name = "I/N|auto|auto/N")]
    pub shard: Option<String>,
    /// Print one JSON object per event (stage cached, started, ran, report, failed,
    /// finished) instead of text; the schema is in README.md.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print one JSON object per stage (`{"event": "status", ...}`) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Compare features made outside the pipeline (Arrow IPC or .npy) with the
    /// pipeline's own, and name how they differ (repeatable).
    #[arg(long = "compare", value_name = "PATH")]
    pub compare: Vec<PathBuf>,
    /// The stage whose features `--compare` checks against (default: the last dataset).
    #[arg(long = "against", value_name = "STAGE", requires = "compare", add = ArgValueCompleter::new(stage_names))]
    pub against: Option<String>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub target: Target,
    /// The images to classify (any format `ingest` reads).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// The `train` stage whose model to use (needed when there are several).
    #[arg(long = "stage", value_name = "NAME", add = ArgValueCompleter::new(stage_names))]
    pub stage: Option<String>,
    /// Print JSON instead of text: the model's fingerprint, its classes, and per image its
    /// `class`, `label` and `probabilities`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: Target,
    /// The `train` stage whose model to serve (needed when there are several).
    #[arg(long = "stage", value_name = "NAME", add = ArgValueCompleter::new(stage_names))]
    pub stage: Option<String>,
    /// The address to listen on (port 0: any free port, printed when listening).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Worker threads answering requests (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The largest request body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_body: usize,
}

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub target: Target,
    /// Run only this check (repeatable): data, init_loss, baseline, overfit, lr_range,
    /// regularization, learning_curve, activations, spread.
    #[arg(long = "check", value_name = "NAME", add = ArgValueCompleter::new(check_names))]
    pub checks: Vec<String>,
    /// The `train` stage to diagnose (needed when there are several).
    #[arg(long = "stage", value_name = "NAME", add = ArgValueCompleter::new(stage_names))]
    pub stage: Option<String>,
    /// Print the diagnosis (every check's findings, evidence and suggested change, and the
    /// ranked causes) as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Then try the top `--set` change for real: train the pipeline without and with it at
    /// two seeds (full runs, kept in the cache), compare the val loss with the seed-to-seed
    /// spread, and run the same checks on the changed pipeline.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: Target,
    /// Where to write the page (default: `<pipeline name>-report.html`); the figures go
    /// to `<stem>-plots/` beside it.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Leave out the diagnosis (it trains for a few seconds to minutes).
    #[arg(long)]
    pub no_diagnose: bool,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    /// What to do with the cache.
    #[arg(value_enum)]
    pub action: CacheAction,
    /// The pipeline file whose cache to look into; for `gc`, every file whose artifacts to
    /// keep (they must share one cache).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// `gc`: also keep every artifact made or used in the last DAYS days.
    #[arg(long = "keep-recent", value_name = "DAYS")]
    pub keep_recent: Option<f64>,
    /// `gc`: say what would be removed, remove nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// `gc` of a shared cache (`s3://…`): nothing younger than this goes, since a run on
    /// another machine may be writing it; longer than any run (`90s`, `30m`, `24h`, `7d`).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub grace: Option<std::time::Duration>,
}

/// An age: a number and a unit (`s`, `m`, `h` or `d`).
fn parse_age(value: &str) -> Result<std::time::Duration, String> {
    let unit_at = value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len());
    let (number, unit) = value.split_at(unit_at);
    let seconds = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("`{value}` needs a unit: s, m, h or d (e.g. `24h`)")),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * seconds < 1e12 => Ok(std::time::Duration::from_secs_f64(n * seconds)),
        _ => Err(format!("`{value}` is not an age: a number >= 0 and a unit, e.g. `24h`")),
    }
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub target: Target,
    /// The stage to export (default: the dataset the last stage holds or reports on); a
    /// `train` stage's metrics go to a folder in DVCLive's layout.
    #[arg(long = "stage", value_name = "NAME", add = ArgValueCompleter::new(stage_names))]
    pub stage: Option<String>,
    /// The Arrow IPC file to write (for a `train` stage, the metrics folder).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DagArgs {
    #[command(flatten)]
    pub target: Target,
    /// `text` for the terminal, `dot` for Graphviz (`| dot -Tsvg`), `mermaid` for Markdown.
    #[arg(long, value_enum, default_value_t = DagFormat::Text)]
    pub format: DagFormat,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write `pipeline.1` and one `pipeline-COMMAND.1` per command into this folder
    /// instead of printing `pipeline(1)`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The shells completions are written for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Elvish,
    Fish,
    Powershell,
    Zsh,
}

impl Shell {
    /// The name clap_complete knows the shell by.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Elvish => "elvish",
            Shell::Fish => "fish",
            Shell::Powershell => "powershell",
            Shell::Zsh => "zsh",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CacheAction {
    /// One line per artifact in the cache: pipeline, stage, kind, fingerprint, rows, bytes.
    Ls,
    /// The cache's size per stage kind and in total.
    Du,
    /// Check every artifact against its recorded checksums; exit 1 when any is damaged.
    Verify,
    /// Remove what none of the given pipeline files needs (`--dry-run` to look first).
    Gc,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

impl From<DagFormat> for dag::DagFormat {
    fn from(f: DagFormat) -> Self {
        match f {
            DagFormat::Text => dag::DagFormat::Text,
            DagFormat::Dot => dag::DagFormat::Dot,
            DagFormat::Mermaid => dag::DagFormat::Mermaid,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command, argument and flag says what it is for in `--help`, and every value of an
    /// enumerated argument is named there.
    #[test]
    fn every_command_and_argument_is_documented() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for cmd in cli.get_subcommands().filter(|c| c.get_name() != "help") {
            if cmd.get_about().is_none() {
                missing.push(cmd.get_name().to_string());
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && arg.get_help().is_none() {
                    missing.push(format!("{} {id}", cmd.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
