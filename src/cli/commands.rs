//! One handler per subcommand: each takes its parsed arguments, calls the layer below that
//! does the work, and prints the result. A failure of that work needs no conversion here:
//! `main` maps any error to its message and exit code in one place ([`Failure::from`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::args::{
    AuditArgs, CacheAction, CacheArgs, CheckArgs, Cli, Command, DagArgs, DiagnoseArgs, ExportArgs, InitArgs,
    PredictArgs, ReportArgs, RunArgs, ServeArgs, StatusArgs, Target,
};
use crate::cli::complete;
use crate::diagnose::diagnosis::CHECKS;
use crate::diagnose::verify;
use crate::error::Failure;
use crate::ops::{audit, cache_cmd, export, init, predict, serve};
use crate::pipeline::dag;
use crate::pipeline::events::{Event, Json, Sink, Text};
use crate::pipeline::executor::{self, RunOptions};
use crate::pipeline::plan::{self, Plan};
use crate::source::suggest::did_you_mean;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Init(args) => init(args, &mut out),
        Command::Run(args) => run_pipeline(args, &mut out),
        Command::Status(args) => status(args, cli.verbose > 0, &mut out),
        Command::Check(args) => check(args, &mut out),
        Command::Audit(args) => audit(args, &mut out),
        Command::Predict(args) => predict(args, &mut out),
        Command::Serve(args) => serve(args, &mut out),
        Command::Diagnose(args) => diagnose(args, &mut out),
        Command::Report(args) => report(args, &mut out),
        Command::Export(args) => export(args, &mut out),
        Command::Cache(args) => cache(args, &mut out),
        Command::Dag(args) => dag(args, &mut out),
        Command::Completions(args) => complete::write_registration(args.shell, &mut out),
        Command::Man(args) => complete::write_man(args.dir.as_deref(), &mut out),
    }
}

fn init(args: InitArgs, out: &mut dyn Write) -> Result<()> {
    if !args.dir.is_dir() {
        return Err(Failure::Usage(format!("{} is not a folder of images", args.dir.display())).into());
    }
    let file = args.out.unwrap_or_else(|| {
        let name = args
            .dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_owned()));
        let name = name.map_or("images".into(), |n| n.to_string_lossy().into_owned());
        PathBuf::from("pipelines").join(format!("{name}.yaml"))
    });
    if file.exists() {
        return Err(Failure::Usage(format!(
            "{} exists; init never writes over a file: name another with -o, or remove it",
            file.display()
        ))
        .into());
    }
    init::init(&args.dir, &file, out)?;
    Ok(())
}

fn serve(args: ServeArgs, out: &mut dyn Write) -> Result<()> {
    if args.workers == Some(0) {
        return Err(Failure::Usage("--workers must be at least 1".into()).into());
    }
    let plan = load(&args.target)?;
    let predictor = predict::Predictor::load(&plan, args.stage.as_deref())?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let opts = serve::ServeOptions {
        addr: args.addr,
        workers,
        max_body: args.max_body,
    };
    serve::serve(&predictor, &opts, out)
}

fn run_pipeline(args: RunArgs, out: &mut dyn Write) -> Result<()> {
    if let Some(n) = args.jobs {
        if n == 0 {
            return Err(Failure::Usage("-j must be at least 1".into()).into());
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    let plan = load(&args.target)?;
    for s in &args.stages {
        known_stage(&plan, s, "--stage")?;
    }
    let force = match args.force {
        None => None,
        Some(s) if s.is_empty() => Some(None),
        Some(s) => {
            known_stage(&plan, &s, "--force")?;
            Some(Some(s))
        }
    };
    let shard = args
        .shard
        .as_deref()
        .map(crate::pipeline::shard::Shard::parse)
        .transpose()
        .map_err(Failure::Usage)?;
    let opts = RunOptions {
        targets: args.stages,
        force,
        shard,
    };
    if args.json {
        executor::run_with(&plan, &opts, &mut Json::new(out))
    } else {
        executor::run(&plan, &opts, out)
    }
}

/// `status`; `verbose` adds each stage's params as they are used.
fn status(args: StatusArgs, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    let statuses = executor::status(&plan)?;
    let mut sink: Box<dyn Sink + '_> = if args.json {
        Box::new(Json::new(out))
    } else {
        Box::new(Text::new(out, executor::name_width(&plan), &plan.file))
    };
    for s in &statuses {
        let params = plan.index_of(&s.name).map(|i| plan.stage(i).params_shown());
        sink.emit(Event::Status {
            stage: &s.name,
            kind: s.kind,
            stale: s.stale.as_deref(),
            params: params.as_deref().filter(|_| verbose),
        })?;
    }
    Ok(())
}

fn check(args: CheckArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    let names: Vec<&str> = plan.order.iter().map(|&i| plan.stage(i).name.as_str()).collect();
    writeln!(
        out,
        "{}: ok, {} stages: {}",
        args.target.file.display(),
        plan.order.len(),
        names.join(" -> ")
    )?;
    Ok(())
}

fn audit(args: AuditArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    if let Some(a) = &args.against {
        known_stage(&plan, a, "--against")?;
    }
    let (text, consistent) = if args.compare.is_empty() {
        audit::audit(&plan, args.json)?
    } else {
        audit::compare(&plan, &args.compare, args.against.as_deref(), args.json)?
    };
    write!(out, "{text}")?;
    consistent_or_fail(consistent)
}

fn predict(args: PredictArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    let text = predict::predict(&plan, args.stage.as_deref(), &args.images, args.json)?;
    write!(out, "{text}")?;
    Ok(())
}

fn diagnose(args: DiagnoseArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    for c in &args.checks {
        if !CHECKS.contains(&c.as_str()) {
            let hint = match did_you_mean(c, CHECKS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("checks: {}", CHECKS.join(", ")),
            };
            return Err(Failure::Usage(format!("--check {c}: there is no check `{c}`; {hint}")).into());
        }
    }
    // Stage lines of the data stages it brings up to date go to stderr, so that stdout is
    // the diagnosis alone (`--json`).
    let d = crate::diagnose::diagnosis::diagnose(&plan, args.stage.as_deref(), &args.checks, &mut std::io::stderr())?;
    if !args.json {
        write!(out, "{}", d.to_text())?;
        out.flush()?;
    }
    let verified = if args.verify {
        let plan_with = |extra: &[String]| {
            load(&Target {
                file: args.target.file.clone(),
                sets: args.target.sets.iter().chain(extra).cloned().collect(),
                cache: args.target.cache.clone(),
            })
        };
        let v = verify::verify(
            &d,
            &plan_with,
            args.stage.as_deref(),
            &args.checks,
            &mut std::io::stderr(),
        )?;
        if !args.json {
            match &v {
                Some(v) => write!(out, "\n{}", v.to_text())?,
                None => writeln!(out, "\nverify: no cause in the verdict has a `--set` change to try")?,
            }
        }
        Some(v)
    } else {
        None
    };
    if args.json {
        let mut doc = serde_json::to_value(&d)?;
        if let (Some(v), Some(map)) = (verified, doc.as_object_mut()) {
            map.insert("verify".into(), serde_json::to_value(v)?);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

fn report(args: ReportArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    let path = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}-report.html", plan.spec.name)));
    let w = crate::report::page::report(&plan, &path, !args.no_diagnose, &mut std::io::stderr())?;
    writeln!(
        out,
        "wrote {} ({} figures; {} PNG and SVG files in {})",
        w.html.display(),
        w.figures,
        w.plots.len(),
        crate::report::page::plots_dir(&w.html).display()
    )?;
    Ok(())
}

fn export(args: ExportArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    if let Some(s) = &args.stage {
        known_stage(&plan, s, "--stage")?;
    }
    match export::export(&plan, args.stage.as_deref(), &args.out)? {
        export::Exported::Dataset(name, w) => writeln!(
            out,
            "exported stage `{name}`: {} rows, {} bytes to {}",
            w.rows,
            w.bytes,
            args.out.display()
        )?,
        export::Exported::Metrics(name, epochs) => writeln!(
            out,
            "exported the metrics of stage `{name}`: {epochs} epochs to {} (DVCLive's layout: metrics.json, plots/metrics/)",
            args.out.display()
        )?,
    }
    Ok(())
}

fn cache(args: CacheArgs, out: &mut dyn Write) -> Result<()> {
    if let CacheAction::Gc = args.action {
        if args.keep_recent.is_some_and(|d| !d.is_finite() || d < 0.0) {
            anyhow::bail!("--keep-recent takes a number of days >= 0");
        }
        let plans = args
            .files
            .iter()
            .map(|f| load_file(f, &[]))
            .collect::<Result<Vec<_>>>()?;
        let opts = crate::ops::gc::GcOptions {
            keep_recent_days: args.keep_recent,
            dry_run: args.dry_run,
            grace: args.grace.unwrap_or(crate::ops::gc::DEFAULT_GRACE),
        };
        let text = crate::ops::gc::gc(&plans, &opts, |lock| {
            eprintln!("waiting for the pipeline run that holds {}", lock.display());
            Ok(())
        })?;
        write!(out, "{text}")?;
        return Ok(());
    }
    let [file] = &args.files[..] else {
        anyhow::bail!(
            "`cache {}` takes one pipeline file",
            format!("{:?}", args.action).to_lowercase()
        );
    };
    if args.keep_recent.is_some() || args.dry_run || args.grace.is_some() {
        anyhow::bail!("--keep-recent, --dry-run and --grace are options of `cache gc`");
    }
    let plan = load_file(file, &[])?;
    match args.action {
        CacheAction::Ls => write!(out, "{}", cache_cmd::ls(&plan.cache_dir)?)?,
        CacheAction::Du => write!(out, "{}", cache_cmd::du(&plan.cache_dir)?)?,
        CacheAction::Verify => {
            let (text, intact) = cache_cmd::verify(&plan.cache_dir)?;
            write!(out, "{text}")?;
            return consistent_or_fail(intact);
        }
        CacheAction::Gc => unreachable!("handled above"),
    }
    Ok(())
}

fn dag(args: DagArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load(&args.target)?;
    write!(out, "{}", dag::dag(&plan, args.format.into()))?;
    Ok(())
}

/// Reads and plans a pipeline file; its problems are a spec failure (exit 2).
fn load(target: &Target) -> Result<Plan> {
    let mut plan = load_file(&target.file, &target.sets)?;
    if let Some(cache) = &target.cache {
        plan.set_cache(cache).map_err(Failure::Usage)?;
    }
    Ok(plan)
}

fn load_file(file: &Path, sets: &[String]) -> Result<Plan> {
    plan::load(file, sets).map_err(|e| Failure::Spec(e.rendered).into())
}

/// `audit` and `cache verify` exit 1 after printing what they found.
fn consistent_or_fail(consistent: bool) -> Result<()> {
    if consistent {
        Ok(())
    } else {
        Err(Failure::Inconsistent.into())
    }
}

fn known_stage(plan: &Plan, name: &str, flag: &str) -> Result<()> {
    plan.named(name)
        .map(drop)
        .map_err(|why| Failure::Usage(format!("{flag} {name}: {why}")).into())
}
