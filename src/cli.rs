//! The command line: argument definitions and one function per subcommand.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Failure;
use crate::executor::{self, RunOptions};
use crate::plan::{self, Plan};
use crate::suggest::did_you_mean;

#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    version,
    about = "Declarative, cached image-classifier preprocessing pipelines"
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
    /// Run every stale stage, reuse the rest.
    Run {
        file: PathBuf,
        /// Run only this stage and what it needs (repeatable).
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
        /// Recompute NAME even if cached, or every stage when no NAME is given.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        force: Option<String>,
        /// Override a param for this run: `stage.param=value` (value in YAML syntax).
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
        /// Worker threads for decoding and pixel work (default: all cores).
        #[arg(short = 'j', long = "jobs", value_name = "N")]
        jobs: Option<usize>,
    },
    /// Show each stage as fresh or stale, and why.
    Status {
        file: PathBuf,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
    },
    /// Parse and plan only; report every problem.
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
    },
    /// Show how every artifact was made and what it holds, per partition; exit 1 on any
    /// inconsistency.
    Audit {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Compare features made outside the pipeline (Arrow IPC or .npy) with the
        /// pipeline's own, and name how they differ (repeatable).
        #[arg(long = "compare", value_name = "PATH")]
        compare: Vec<PathBuf>,
        /// The stage whose features `--compare` checks against (default: the last dataset).
        #[arg(long = "against", value_name = "STAGE", requires = "compare")]
        against: Option<String>,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
    },
    /// Classify images with the trained model, through the same preprocessing and frozen
    /// fitted params as its training data.
    Predict {
        file: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// The `train` stage whose model to use (needed when there are several).
        #[arg(long = "stage", value_name = "NAME")]
        stage: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Find out why the classifier predicts one class: run the checklist (data, loss at
    /// init, input-independent baseline, overfitting tiny sets, learning-rate range test,
    /// learning curve, activations and gradients, prediction spread) on the cached data with
    /// the `train` stage's own model and hyperparameters, then rank the findings.
    Diagnose {
        file: PathBuf,
        /// Run only this check (repeatable): data, init_loss, baseline, overfit, lr_range,
        /// learning_curve, activations, spread.
        #[arg(long = "check", value_name = "NAME")]
        checks: Vec<String>,
        /// The `train` stage to diagnose (needed when there are several).
        #[arg(long = "stage", value_name = "NAME")]
        stage: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
    },
    /// Write one self-contained HTML page: the DAG and each stage's status, params,
    /// fingerprint, rows and time; the audit and validate results; the metrics; the
    /// diagnosis and its figures (also written as PNG and SVG beside the page).
    Report {
        file: PathBuf,
        /// Where to write the page (default: `<pipeline name>-report.html`); the figures go
        /// to `<stem>-plots/` beside it.
        #[arg(long, short = 'o', value_name = "PATH")]
        out: Option<PathBuf>,
        /// Leave out the diagnosis (it trains for a few seconds to minutes).
        #[arg(long)]
        no_diagnose: bool,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
    },
    /// Look into the cache of a pipeline: `ls`, `du`, or `verify` every artifact against
    /// its recorded checksum (exit 1 when any is damaged).
    Cache {
        #[arg(value_enum)]
        action: CacheAction,
        file: PathBuf,
    },
    /// Write a dataset stage's rows and pixels (as its readers see them) to one standalone
    /// Arrow IPC file, for pyarrow, polars or numpy.
    Export {
        file: PathBuf,
        /// The stage to export (default: the dataset the last stage holds or reports on).
        #[arg(long = "stage", value_name = "NAME")]
        stage: Option<String>,
        /// The Arrow IPC file to write.
        #[arg(long, short = 'o', value_name = "PATH")]
        out: PathBuf,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
    },
    /// Print the stage graph.
    Dag {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CacheAction {
    Ls,
    Du,
    Verify,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Run {
            file,
            stages,
            force,
            sets,
            jobs,
        } => {
            if let Some(n) = jobs {
                if n == 0 {
                    return Err(Failure::Usage("-j must be at least 1".into()).into());
                }
                rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
            }
            let plan = load(&file, &sets)?;
            for s in &stages {
                known_stage(&plan, s, "--stage")?;
            }
            let force = match force {
                None => None,
                Some(s) if s.is_empty() => Some(None),
                Some(s) => {
                    known_stage(&plan, &s, "--force")?;
                    Some(Some(s))
                }
            };
            let opts = RunOptions { targets: stages, force };
            executor::run(&plan, &opts, &mut out).map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
        }
        Command::Status { file, sets } => {
            let plan = load(&file, &sets)?;
            let statuses = executor::status(&plan).map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
            let width = statuses.iter().map(|s| s.name.len()).max().unwrap_or(0);
            for s in statuses {
                match s.stale {
                    None => writeln!(out, "{:width$}  fresh", s.name)?,
                    Some(reasons) => writeln!(out, "{:width$}  stale  {}", s.name, crate::dirty::join(&reasons))?,
                }
            }
        }
        Command::Check { file, sets } => {
            let plan = load(&file, &sets)?;
            writeln!(
                out,
                "{}: ok, {} stages: {}",
                file.display(),
                plan.order.len(),
                plan.order
                    .iter()
                    .map(|&i| plan.stage(i).name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )?;
        }
        Command::Audit {
            file,
            json,
            compare,
            against,
            sets,
        } => {
            let plan = load(&file, &sets)?;
            if let Some(a) = &against {
                known_stage(&plan, a, "--against")?;
            }
            let (text, consistent) = if compare.is_empty() {
                crate::audit::audit(&plan, json)
            } else {
                crate::audit::compare(&plan, &compare, against.as_deref(), json)
            }
            .map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
            write!(out, "{text}")?;
            if !consistent {
                return Err(Failure::Inconsistent.into());
            }
        }
        Command::Predict {
            file,
            images,
            stage,
            json,
        } => {
            let plan = load(&file, &[])?;
            let text = crate::predict::predict(&plan, stage.as_deref(), &images, json)
                .map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
            write!(out, "{text}")?;
        }
        Command::Diagnose {
            file,
            checks,
            stage,
            json,
            sets,
        } => {
            let plan = load(&file, &sets)?;
            for c in &checks {
                if !crate::diagnose::CHECKS.contains(&c.as_str()) {
                    let hint = match did_you_mean(c, crate::diagnose::CHECKS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("checks: {}", crate::diagnose::CHECKS.join(", ")),
                    };
                    return Err(Failure::Usage(format!("--check {c}: there is no check `{c}`; {hint}")).into());
                }
            }
            // Stage lines of the data stages it brings up to date go to stderr, so that
            // stdout is the diagnosis alone (`--json`).
            let d = crate::diagnose::diagnose(&plan, stage.as_deref(), &checks, &mut std::io::stderr())
                .map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
            } else {
                write!(out, "{}", d.to_text())?;
            }
        }
        Command::Report {
            file,
            out: path,
            no_diagnose,
            sets,
        } => {
            let plan = load(&file, &sets)?;
            let path = path.unwrap_or_else(|| PathBuf::from(format!("{}-report.html", plan.spec.name)));
            let w = crate::report::report(&plan, &path, !no_diagnose, &mut std::io::stderr())
                .map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
            writeln!(
                out,
                "wrote {} ({} figures; {} PNG and SVG files in {})",
                w.html.display(),
                w.figures,
                w.plots.len(),
                crate::report::plots_dir(&w.html).display()
            )?;
        }
        Command::Export {
            file,
            stage,
            out: path,
            sets,
        } => {
            let plan = load(&file, &sets)?;
            if let Some(s) = &stage {
                known_stage(&plan, s, "--stage")?;
            }
            let (name, w) = crate::export::export(&plan, stage.as_deref(), &path)
                .map_err(|e| Failure::Pipeline(format!("{e:#}")))?;
            writeln!(
                out,
                "exported stage `{name}`: {} rows, {} bytes to {}",
                w.rows,
                w.bytes,
                path.display()
            )?;
        }
        Command::Cache { action, file } => {
            let plan = load(&file, &[])?;
            let fail = |e: anyhow::Error| Failure::Pipeline(format!("{e:#}"));
            match action {
                CacheAction::Ls => write!(out, "{}", crate::cache_cmd::ls(&plan.cache_dir).map_err(fail)?)?,
                CacheAction::Du => write!(out, "{}", crate::cache_cmd::du(&plan.cache_dir).map_err(fail)?)?,
                CacheAction::Verify => {
                    let (text, intact) = crate::cache_cmd::verify(&plan.cache_dir).map_err(fail)?;
                    write!(out, "{text}")?;
                    if !intact {
                        return Err(Failure::Inconsistent.into());
                    }
                }
            }
        }
        Command::Dag { file, format } => {
            let plan = load(&file, &[])?;
            write!(out, "{}", dag(&plan, format))?;
        }
    }
    Ok(())
}

fn load(file: &std::path::Path, sets: &[String]) -> Result<Plan> {
    plan::load(file, sets).map_err(|e| Failure::Spec(e.rendered).into())
}

fn known_stage(plan: &Plan, name: &str, flag: &str) -> Result<()> {
    if plan.index_of(name).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = plan.spec.stages.iter().map(|s| s.name.as_str()).collect();
    let hint = match did_you_mean(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("stages: {}", names.join(", ")),
    };
    Err(Failure::Usage(format!("{flag} {name}: there is no stage `{name}`; {hint}")).into())
}

/// Renders the stage graph as text, Graphviz dot or Mermaid.
pub fn dag(plan: &Plan, format: DagFormat) -> String {
    let mut s = String::new();
    let label = |i: usize| {
        let st = plan.stage(i);
        format!("{} ({})", st.name, st.params.kind())
    };
    match format {
        DagFormat::Text => {
            for &i in &plan.order {
                let inputs: Vec<&str> = plan.inputs[i].iter().map(|&j| plan.stage(j).name.as_str()).collect();
                if inputs.is_empty() {
                    s.push_str(&format!("{}\n", label(i)));
                } else {
                    s.push_str(&format!("{} <- {}\n", label(i), inputs.join(", ")));
                }
            }
        }
        DagFormat::Dot => {
            s.push_str(&format!("digraph \"{}\" {{\n  rankdir=LR;\n", plan.spec.name));
            for &i in &plan.order {
                s.push_str(&format!("  \"{}\" [label=\"{}\"];\n", plan.stage(i).name, label(i)));
            }
            for &i in &plan.order {
                for &j in &plan.inputs[i] {
                    s.push_str(&format!(
                        "  \"{}\" -> \"{}\";\n",
                        plan.stage(j).name,
                        plan.stage(i).name
                    ));
                }
            }
            s.push_str("}\n");
        }
        DagFormat::Mermaid => {
            s.push_str("graph LR\n");
            for &i in &plan.order {
                s.push_str(&format!("  {}[\"{}\"]\n", plan.stage(i).name, label(i)));
            }
            for &i in &plan.order {
                for &j in &plan.inputs[i] {
                    s.push_str(&format!("  {} --> {}\n", plan.stage(j).name, plan.stage(i).name));
                }
            }
        }
    }
    s
}
