//! The validated plan: stages linked to their inputs, in a runnable order, checked as a whole.
//!
//! [`load`] reads a pipeline file, applies `--set` overrides, types it ([`crate::pipeline::spec`]) and
//! checks what only the whole pipeline can tell: every input names a stage, there are no
//! cycles (the cycle is named), pixels exist where a stage needs them, a stage that fits
//! statistics has a `split` upstream, and the cache and the data stay inside the project.
//! Each is one pass; all problems are reported at once, in file order. The executor trusts
//! a [`Plan`] and re-checks nothing of this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cache::remote::Url;
use crate::cache::store::Cache;
use crate::pipeline::spec::{self, PipelineSpec, StageSpec};
use crate::source::diag::{Diagnostic, SetArg, Span, render_all};
use crate::source::suggest::did_you_mean;
use crate::stage::params::Params;

/// A checked pipeline, ready to run.
#[derive(Debug)]
pub struct Plan {
    pub spec: PipelineSpec,
    /// The pipeline file as given on the command line (for messages).
    pub file: PathBuf,
    /// Folder that relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    /// The local cache folder (with a shared cache, where its artifacts are copied to).
    pub cache_dir: PathBuf,
    /// The shared cache on object storage (`cache: s3://…`), if any.
    pub cache_remote: Option<Url>,
    /// Stage indices (into `spec.stages`) in an order where inputs come first.
    pub order: Vec<usize>,
    /// For each stage, the indices of its inputs.
    pub inputs: Vec<Vec<usize>>,
}

impl Plan {
    /// Opens the plan's cache: the local folder, with its shared cache if it has one.
    pub fn open_cache(&self) -> anyhow::Result<Cache> {
        Cache::open_with(&self.cache_dir, self.cache_remote.as_ref())
    }

    /// Puts the cache where `--cache` says (a folder or a shared cache's URL), over
    /// `PIPELINE_CACHE` and the file's `cache:`.
    pub fn set_cache(&mut self, value: &str) -> Result<(), String> {
        (self.cache_dir, self.cache_remote) =
            user_cache(value, &self.base_dir).map_err(|why| format!("--cache: {why}"))?;
        Ok(())
    }

    pub fn stage(&self, i: usize) -> &StageSpec {
        &self.spec.stages[i]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.spec.stages.iter().position(|s| s.name == name)
    }

    /// The stage named `name`, or why there is none (with the name it may be a typo of).
    pub fn named(&self, name: &str) -> Result<usize, String> {
        if let Some(i) = self.index_of(name) {
            return Ok(i);
        }
        let names: Vec<&str> = self.spec.stages.iter().map(|s| s.name.as_str()).collect();
        let hint = match did_you_mean(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("stages: {}", names.join(", ")),
        };
        Err(format!("there is no stage `{name}`; {hint}"))
    }

    /// `targets` and everything they need, in run order.
    pub fn closure(&self, targets: &[usize]) -> Vec<usize> {
        let mut needed = vec![false; self.spec.stages.len()];
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(i) = stack.pop() {
            if !needed[i] {
                needed[i] = true;
                stack.extend(&self.inputs[i]);
            }
        }
        self.order.iter().copied().filter(|&i| needed[i]).collect()
    }

    /// The stage whose dataset stage `i`'s output is or stands for: itself, or for a report
    /// or model stage the dataset it reported on or was trained on.
    pub fn data_source(&self, mut i: usize) -> usize {
        loop {
            let next = match self.stage(i).params {
                Params::Validate(_) | Params::Train(_) => self.inputs[i].first().copied(),
                Params::Evaluate(_) => self.data_input(i),
                _ => None,
            };
            match next {
                Some(j) => i = j,
                None => return i,
            }
        }
    }

    /// The stage whose dataset stage `i` reads: its input, or for `evaluate` its second
    /// input or else the data its model was trained on.
    pub fn data_input(&self, i: usize) -> Option<usize> {
        let inputs = &self.inputs[i];
        let j = match self.stage(i).params {
            Params::Evaluate(_) => match inputs.get(1) {
                Some(&d) => d,
                None => *self.inputs[*inputs.first()?].first()?,
            },
            _ => *inputs.first()?,
        };
        Some(self.data_source(j))
    }

    /// The `train` stage named `name`, or the only one when `None`.
    pub fn train_stage(&self, name: Option<&str>) -> anyhow::Result<usize> {
        let trains: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| matches!(self.stage(i).params, Params::Train(_)))
            .collect();
        match name {
            Some(name) => self
                .index_of(name)
                .filter(|i| trains.contains(i))
                .ok_or_else(|| anyhow::anyhow!("`{name}` is not a `train` stage of this pipeline")),
            None => match trains.as_slice() {
                [one] => Ok(*one),
                [] => anyhow::bail!("the pipeline has no `train` stage"),
                _ => anyhow::bail!("the pipeline has several `train` stages; choose one with --stage"),
            },
        }
    }

    /// The `ingest` stage upstream of stage `i` (itself if it is one).
    pub fn ingest_of(&self, mut i: usize) -> Option<usize> {
        loop {
            if matches!(self.stage(i).params, Params::Ingest(_)) {
                return Some(i);
            }
            i = *self.inputs[i].first()?;
        }
    }
}

/// A pipeline file that could not be loaded: the rendered problems.
#[derive(Debug)]
pub struct LoadError {
    pub rendered: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.rendered.trim_end())
    }
}

impl std::error::Error for LoadError {}

/// Reads, types and checks a pipeline file.
pub fn load(file: &Path, sets: &[String]) -> Result<Plan, LoadError> {
    let source = read_source(file).map_err(|d| failure(file, vec![d], "", &[]))?;
    load_source(file, &source, sets)
}

/// The text of the pipeline file, or why it cannot be had (too large, not UTF-8, unreadable).
fn read_source(file: &Path) -> Result<String, Diagnostic> {
    let max = crate::source::yaml::MAX_SOURCE_BYTES;
    match std::fs::read(file) {
        Ok(bytes) if bytes.len() > max => Err(Diagnostic::new(
            None,
            format!(
                "the file is {} bytes; pipeline files are limited to {max} bytes",
                bytes.len()
            ),
        )),
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| Diagnostic::new(None, "the file is not valid UTF-8 text")),
        Err(e) => Err(Diagnostic::new(None, format!("cannot read the pipeline file: {e}"))
            .with_help("check the path; it is relative to the current directory")),
    }
}

/// The problems `diags` of the pipeline file `file` (whose text is `source`) and of the
/// `--set` arguments `sets`, rendered.
fn failure(file: &Path, diags: Vec<Diagnostic>, source: &str, sets: &[SetArg]) -> LoadError {
    LoadError {
        rendered: render_all(&diags, &file.display().to_string(), source, sets),
    }
}

/// Types and checks the text `source` of the pipeline file `file` (which need not exist:
/// relative paths in it are resolved from its folder).
pub fn load_source(file: &Path, source: &str, sets: &[String]) -> Result<Plan, LoadError> {
    let mut root = crate::source::yaml::parse(source).map_err(|d| failure(file, vec![d], source, &[]))?;
    let (args, set_diags) = spec::apply_overrides(&mut root, sets);
    let fail = |diags: Vec<Diagnostic>| failure(file, diags, source, &args);
    if !set_diags.is_empty() {
        return Err(fail(set_diags));
    }
    let (spec, mut spec_diags) = spec::parse(&root).map_err(fail)?;
    let base_dir = file
        .parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let cache = resolve_cache(&spec, &base_dir, &mut spec_diags);
    confine_data_paths(&spec, &base_dir, &mut spec_diags);
    check(spec, spec_diags, file.to_path_buf(), base_dir, cache).map_err(|mut d| {
        d.sort_by_key(|x| x.span.map(|s| (s.set, s.line, s.col)));
        fail(d)
    })
}

/// Where the cache is: `PIPELINE_CACHE`, else the file's `cache:` (a folder, which must stay
/// inside the project, or a shared cache's URL), else `cache/` at the project root. With a
/// shared cache, its local copies go to the project's `cache/`.
fn resolve_cache(spec: &PipelineSpec, base_dir: &Path, diags: &mut Vec<Diagnostic>) -> (PathBuf, Option<Url>) {
    // PIPELINE_CACHE (the user's own choice, e.g. a shared cache) overrides the file. A
    // pipeline file may only direct writes inside its own project.
    match (std::env::var_os("PIPELINE_CACHE"), &spec.cache) {
        (Some(env), _) if !env.is_empty() => match user_cache(&env.to_string_lossy(), base_dir) {
            Ok(found) => found,
            Err(why) => {
                diags.push(Diagnostic::new(None, format!("PIPELINE_CACHE: {why}")));
                (project_root(base_dir).join("cache"), None)
            }
        },
        (_, Some(c)) if Url::is_url(c) => match Url::parse(c) {
            Ok(url) => (project_root(base_dir).join("cache"), Some(url)),
            Err(why) => {
                diags.push(Diagnostic::new(spec.cache_span, why));
                (project_root(base_dir).join("cache"), None)
            }
        },
        (_, Some(c)) => {
            let (resolved, root) = (lexical(&absolute(base_dir).join(c)), absolute(&project_root(base_dir)));
            if !resolved.starts_with(&root) {
                diags.push(
                    Diagnostic::new(
                        spec.cache_span,
                        format!(
                            "`cache: {c}` resolves to {}, outside the project {}",
                            resolved.display(),
                            root.display()
                        ),
                    )
                    .with_help(
                        "a pipeline file may only write inside its project: use a folder inside it, or set the \
                         environment variable PIPELINE_CACHE to choose a cache elsewhere",
                    ),
                );
            }
            (base_dir.join(c), None)
        }
        (_, None) => (project_root(base_dir).join("cache"), None),
    }
}

/// A cache the user chose (`PIPELINE_CACHE`, `--cache`): any folder, or a shared cache's URL.
fn user_cache(value: &str, base_dir: &Path) -> Result<(PathBuf, Option<Url>), String> {
    if Url::is_url(value) {
        Ok((project_root(base_dir).join("cache"), Some(Url::parse(value)?)))
    } else {
        Ok((PathBuf::from(value), None))
    }
}

/// Reports every `ingest` image folder or label file outside the project and the folders
/// listed in `PIPELINE_DATA_ROOTS`.
fn confine_data_paths(spec: &PipelineSpec, base_dir: &Path, diags: &mut Vec<Diagnostic>) {
    // Images and label files are read from inside the project too, or from folders the user
    // lists in PIPELINE_DATA_ROOTS (colon-separated), never from wherever a file points.
    let root = absolute(&project_root(base_dir));
    let allowed: Vec<PathBuf> = std::iter::once(root.clone())
        .chain(
            std::env::var_os("PIPELINE_DATA_ROOTS")
                .map(|v| {
                    std::env::split_paths(&v)
                        .filter(|p| !p.as_os_str().is_empty())
                        .map(|p| absolute(&p))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .collect();
    for st in &spec.stages {
        let Params::Ingest(ing) = &st.params else { continue };
        for (field, value) in [("path", Some(&ing.path)), ("csv", ing.csv.as_ref())] {
            let Some(value) = value else { continue };
            let resolved = lexical(&absolute(base_dir).join(value));
            if !allowed.iter().any(|a| resolved.starts_with(a)) {
                diags.push(
                    Diagnostic::new(
                        st.span,
                        format!(
                            "stage `{}`: `{field}: {value}` resolves to {}, outside the project {}",
                            st.name,
                            resolved.display(),
                            root.display()
                        ),
                    )
                    .with_help(
                        "keep the data inside the project, or list its folder in the environment variable \
                         PIPELINE_DATA_ROOTS to allow reading it",
                    ),
                );
            }
        }
    }
}

/// `p` made absolute through the file system where it exists, with `.` and `..` resolved.
fn absolute(p: &Path) -> PathBuf {
    lexical(&std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// `p` with `.` and `..` resolved without touching the file system.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The project root: the nearest folder at or above `dir` holding `.git`; else the current
/// directory when `dir` is inside it (a project unpacked without git, run from its top);
/// else `dir`.
fn project_root(dir: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(git) = abs.ancestors().find(|a| a.join(".git").exists()) {
        return git.to_path_buf();
    }
    match std::env::current_dir().and_then(std::fs::canonicalize) {
        Ok(cwd) if abs.starts_with(&cwd) => cwd,
        _ => dir.to_path_buf(),
    }
}

/// Links inputs, orders the stages and checks the pipeline as a whole, pass by pass.
fn check(
    spec: PipelineSpec,
    mut diags: Vec<Diagnostic>,
    file: PathBuf,
    base_dir: PathBuf,
    (cache_dir, cache_remote): (PathBuf, Option<Url>),
) -> Result<Plan, Vec<Diagnostic>> {
    let (inputs, linked) = link_inputs(&spec, &mut diags);
    let order = match topo_order(&inputs) {
        Ok(o) => o,
        Err(cycle) => {
            diags.push(cycle_problem(&spec, &cycle));
            return Err(diags);
        }
    };
    let flows = check_flow(&spec, &inputs, &order, linked, &mut diags);
    check_fitted_statistics(&spec, &inputs, &order, &flows, &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Plan {
        spec,
        file,
        base_dir,
        cache_dir,
        cache_remote,
        order,
        inputs,
    })
}

/// Resolves every stage's input names to stage indices; a stage with a wrong input count or
/// an input that is itself, missing or broken is marked not linked (`false`).
fn link_inputs(spec: &PipelineSpec, diags: &mut Vec<Diagnostic>) -> (Vec<Vec<usize>>, Vec<bool>) {
    let names: BTreeMap<&str, usize> = spec
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut inputs = vec![Vec::new(); spec.stages.len()];
    let mut linked = vec![true; spec.stages.len()];
    for (i, s) in spec.stages.iter().enumerate() {
        if let Some(d) = input_count_problem(s) {
            diags.push(d);
            linked[i] = false;
            continue;
        }
        for (name, span) in &s.inputs {
            match names.get(name.as_str()) {
                Some(&j) if j == i => {
                    diags.push(Diagnostic::new(
                        *span,
                        format!("stage `{}` names itself as its input", s.name),
                    ));
                    linked[i] = false;
                }
                Some(&j) => inputs[i].push(j),
                // A stage with problems of its own: those were reported already.
                None if spec.declared.contains(name) => linked[i] = false,
                None => {
                    linked[i] = false;
                    diags.push(missing_input_problem(s, name, *span, &names));
                }
            }
        }
    }
    (inputs, linked)
}

/// The problem with the number of inputs `s` names, if its kind takes another number.
fn input_count_problem(s: &StageSpec) -> Option<Diagnostic> {
    let (least, most) = s.params.input_count();
    let found = s.inputs.len();
    if (least..=most).contains(&found) {
        return None;
    }
    let (name, kind) = (&s.name, s.params.kind());
    let msg = if most == 0 {
        format!("stage `{name}` (kind `{kind}`) takes no input")
    } else if least == most {
        format!("stage `{name}` (kind `{kind}`) takes exactly {least} input, found {found}")
    } else {
        format!("stage `{name}` (kind `{kind}`) takes {least} to {most} inputs, found {found}")
    };
    let span = s.inputs.first().map_or(s.span, |(_, sp)| *sp);
    Some(Diagnostic::new(span, msg))
}

/// `s` takes input from `name`, which no stage is called: suggests the closest name.
fn missing_input_problem(s: &StageSpec, name: &str, span: Span, names: &BTreeMap<&str, usize>) -> Diagnostic {
    let d = Diagnostic::new(
        span,
        format!(
            "stage `{}` takes input from `{name}`, but there is no such stage",
            s.name
        ),
    );
    match did_you_mean(name, names.keys().copied()) {
        Some(m) => d.with_help(format!("did you mean `{m}`?")),
        None => d.with_help(format!(
            "stages: {}",
            names.keys().copied().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The stages of `cycle` named in order, at its first stage.
fn cycle_problem(spec: &PipelineSpec, cycle: &[usize]) -> Diagnostic {
    let path: Vec<&str> = cycle.iter().map(|&i| spec.stages[i].name.as_str()).collect();
    Diagnostic::new(
        spec.stages[cycle[0]].span,
        format!("the stages form a cycle: {}", path.join(" -> ")),
    )
    .with_help("a stage cannot depend on its own output; change one `input` to break the cycle")
}

/// What flows out of a stage, as far as the checks are concerned.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    /// The rows carry decoded pixels.
    pixels: bool,
    /// The rows carry a `train`/`val`/`test` partition.
    partition: bool,
    /// The output is a model, not a dataset.
    model: bool,
    /// A `validate` stage is at or upstream of it.
    validated: bool,
}

/// Walks the stages in run order checking each gets what its kind needs (a dataset or a
/// model, pixels, a partition, a `validate` upstream); `None` for a stage not checked
/// because it or an input has problems of its own.
fn check_flow(
    spec: &PipelineSpec,
    inputs: &[Vec<usize>],
    order: &[usize],
    linked: Vec<bool>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Option<Flow>> {
    let mut flows: Vec<Option<Flow>> = vec![None; spec.stages.len()];
    for &i in order {
        let Some(ins) = inputs[i].iter().map(|&j| flows[j]).collect::<Option<Vec<Flow>>>() else {
            continue;
        };
        if !linked[i] {
            continue;
        }
        let s = &spec.stages[i];
        let input = ins.first().copied().unwrap_or_default();
        if input.model && !matches!(s.params, Params::Evaluate(_)) {
            diags.push(
                Diagnostic::new(
                    s.span,
                    format!("stage `{}` takes a dataset, but its input is a model", s.name),
                )
                .with_help("only `evaluate` takes a `train` stage as input"),
            );
            continue;
        }
        flows[i] = Some(kind_flow(s, input, ins.get(1).copied(), diags));
    }
    flows
}

/// What stage `s` makes of its first input (and `evaluate` of its second), reporting what
/// its kind is missing.
fn kind_flow(s: &StageSpec, input: Flow, second: Option<Flow>, diags: &mut Vec<Diagnostic>) -> Flow {
    let mut problem = |msg: String, help: &str| diags.push(Diagnostic::new(s.span, msg).with_help(help));
    let validated = input.validated || matches!(s.params, Params::Validate(_));
    let dataset = |pixels, partition| Flow {
        pixels,
        partition,
        model: false,
        validated,
    };
    match &s.params {
        Params::Train(t) => {
            if !input.pixels || !input.partition {
                problem(
                    format!(
                        "stage `{}` trains on pixels of a split dataset; its input has none",
                        s.name
                    ),
                    "take the input from `validate` (after resize, normalization and split)",
                );
            }
            if !input.validated && !t.unvalidated {
                problem(
                    format!("stage `{}` trains on data that no `validate` stage checked", s.name),
                    "add a `validate` stage before it (it refuses integer pixels, NaNs, leakage and inconsistent \
                     preprocessing), or set `unvalidated: true` to train anyway (warned on every run)",
                );
            }
            Flow {
                model: true,
                ..dataset(false, false)
            }
        }
        Params::Evaluate(_) => {
            if !input.model {
                problem(
                    format!("the first input of stage `{}` must be a `train` stage", s.name),
                    "write `input: [train]` or `input: [train, <dataset stage>]`",
                );
            }
            if let Some(data) = second
                && (!data.pixels || !data.partition || data.model)
            {
                diags.push(Diagnostic::new(
                    s.span,
                    format!(
                        "the second input of stage `{}` must be a split dataset with pixels",
                        s.name
                    ),
                ));
            }
            dataset(false, false)
        }
        Params::Ingest(_) => dataset(false, false),
        Params::Split(_) => {
            if input.partition {
                problem(
                    format!("stage `{}` splits data that is already split upstream", s.name),
                    "keep one `split` stage per chain",
                );
            }
            dataset(input.pixels, true)
        }
        Params::Resize(_) => {
            if input.pixels {
                problem(
                    format!(
                        "stage `{}` resizes the source images, but its input already holds pixels",
                        s.name
                    ),
                    "take its input from the `ingest` stage (or a `split` right after it)",
                );
            }
            dataset(true, input.partition)
        }
        Params::MeanSubtract(_) | Params::Normalize(_) | Params::Validate(_) => {
            if !input.pixels {
                problem(
                    format!(
                        "stage `{}` (kind `{}`) needs pixels, but no `resize` stage is upstream of it",
                        s.name,
                        s.params.kind()
                    ),
                    "add a `resize` stage before it; it decodes the images",
                );
            }
            dataset(true, input.partition)
        }
    }
}

/// Reports every checked stage that fits statistics without a `split` upstream (the
/// statistics would leak val and test rows into training).
fn check_fitted_statistics(
    spec: &PipelineSpec,
    inputs: &[Vec<usize>],
    order: &[usize],
    flows: &[Option<Flow>],
    diags: &mut Vec<Diagnostic>,
) {
    for &i in order {
        let s = &spec.stages[i];
        if flows[i].is_none() || !s.params.fits_statistics() {
            continue;
        }
        let split_upstream = inputs[i]
            .first()
            .is_some_and(|&j| flows[j].is_some_and(|f| f.partition));
        if !split_upstream {
            diags.push(
                Diagnostic::new(s.span, format!("stage `{}` fits statistics on the data, but no `split` stage is upstream of it", s.name))
                    .with_help(
                        "statistics fitted on all rows would include the val and test images, leaking them into the preprocessing of the \
                         training data; add a `split` stage before it so statistics are computed on `train` rows only, or use constants",
                    ),
            );
        }
    }
}

/// Orders stages so inputs come first (file order among equals); on a cycle, returns it.
fn topo_order(inputs: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        inputs: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = stack.iter().position(|&s| s == i).unwrap_or(0);
                let mut cycle: Vec<usize> = stack[start..].to_vec();
                cycle.reverse();
                cycle.push(cycle[0]);
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        stack.push(i);
        for &j in &inputs[i] {
            visit(j, inputs, marks, stack, out)?;
        }
        stack.pop();
        marks[i] = Mark::Done;
        out.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; inputs.len()];
    let mut out = Vec::new();
    for i in 0..inputs.len() {
        visit(i, inputs, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline `t` whose first stage ingests `images/`, followed by `stages`.
    fn with_ingest(stages: &str) -> String {
        format!("name: t\nstages:\n  ingest:\n    kind: ingest\n    path: images\n{stages}")
    }

    /// The `error:` lines `load_source` renders for `text`, in the order shown.
    fn errors(text: &str) -> Vec<String> {
        let err = load_source(Path::new("/nonexistent/pipeline.yaml"), text, &[]).unwrap_err();
        err.rendered
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .map(String::from)
            .collect()
    }

    #[test]
    fn every_pass_reports_in_file_order() {
        let text = &with_ingest(
            "  mean:
    kind: mean_subtract
    mean: fit
  resize:
    kind: resize
    input: ingset
    size: [4, 4]
  eval:
    kind: evaluate
    input: [mean, ingest, resize]
",
        );
        assert_eq!(
            errors(text),
            [
                "stage `mean` (kind `mean_subtract`) needs pixels, but no `resize` stage is upstream of it",
                "stage `mean` fits statistics on the data, but no `split` stage is upstream of it",
                "stage `resize` takes input from `ingset`, but there is no such stage",
                "stage `eval` (kind `evaluate`) takes 1 to 2 inputs, found 3",
            ]
        );
    }

    #[test]
    fn a_cycle_is_named_stage_by_stage() {
        let text = &with_ingest(
            "  split:
    kind: split
    input: resize
    train: 1
  resize:
    kind: resize
    input: split
    size: [4, 4]
",
        );
        assert_eq!(errors(text), ["the stages form a cycle: resize -> split -> resize"]);
    }

    #[test]
    fn a_well_formed_pipeline_is_ordered_and_linked() {
        let text = &with_ingest(
            "  split:
    kind: split
    train: 1
  resize:
    kind: resize
    size: [4, 4]
",
        );
        let plan = load_source(Path::new("/nonexistent/pipeline.yaml"), text, &[]).unwrap();
        assert_eq!(plan.order, [0, 1, 2]);
        assert_eq!(plan.inputs, [vec![], vec![0], vec![1]]);
        assert_eq!(plan.base_dir, Path::new("/nonexistent"));
    }

    #[test]
    fn orders_inputs_first_and_names_cycles() {
        let inputs = vec![vec![], vec![0], vec![1]];
        assert_eq!(topo_order(&inputs).unwrap(), vec![0, 1, 2]);
        let cyclic = vec![vec![2], vec![0], vec![1]];
        let cycle = topo_order(&cyclic).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
    }
}
