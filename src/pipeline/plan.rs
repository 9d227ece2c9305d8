//! The validated plan: stages linked to their inputs, in a runnable order, checked as a whole.
//!
//! [`load`] reads a pipeline file, applies `--set` overrides, types it ([`crate::pipeline::spec`]) and
//! checks what only the whole pipeline can tell: every input names a stage, there are no
//! cycles (the cycle is named), pixels exist where a stage needs them, and a stage that fits
//! statistics has a `split` upstream. All problems are reported at once. The executor trusts
//! a [`Plan`] and re-checks nothing of this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::pipeline::spec::{self, PipelineSpec, StageSpec};
use crate::source::diag::{Diagnostic, render_all};
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
    pub cache_dir: PathBuf,
    /// Stage indices (into `spec.stages`) in an order where inputs come first.
    pub order: Vec<usize>,
    /// For each stage, the indices of its inputs.
    pub inputs: Vec<Vec<usize>>,
}

impl Plan {
    pub fn stage(&self, i: usize) -> &StageSpec {
        &self.spec.stages[i]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.spec.stages.iter().position(|s| s.name == name)
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
    let shown = file.display().to_string();
    let fail = |diags: Vec<Diagnostic>, source: &str| LoadError {
        rendered: render_all(&diags, &shown, source),
    };
    let source = match std::fs::read(file) {
        Ok(bytes) if bytes.len() > crate::source::yaml::MAX_SOURCE_BYTES => {
            return Err(fail(
                vec![Diagnostic::new(
                    None,
                    format!(
                        "the file is {} bytes; pipeline files are limited to {} bytes",
                        bytes.len(),
                        crate::source::yaml::MAX_SOURCE_BYTES
                    ),
                )],
                "",
            ));
        }
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => {
                return Err(fail(
                    vec![Diagnostic::new(None, "the file is not valid UTF-8 text")],
                    "",
                ));
            }
        },
        Err(e) => {
            return Err(fail(
                vec![
                    Diagnostic::new(None, format!("cannot read the pipeline file: {e}"))
                        .with_help("check the path; it is relative to the current directory"),
                ],
                "",
            ));
        }
    };
    load_source(file, &source, sets)
}

/// Types and checks the text `source` of the pipeline file `file` (which need not exist:
/// relative paths in it are resolved from its folder).
pub fn load_source(file: &Path, source: &str, sets: &[String]) -> Result<Plan, LoadError> {
    let shown = file.display().to_string();
    let fail = |diags: Vec<Diagnostic>, source: &str| LoadError {
        rendered: render_all(&diags, &shown, source),
    };
    let mut root = crate::source::yaml::parse(source).map_err(|d| fail(vec![d], source))?;
    spec::apply_overrides(&mut root, sets).map_err(|d| fail(d, source))?;
    let (spec, spec_diags) = spec::parse(&root).map_err(|d| fail(d, source))?;
    let base_dir = file
        .parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut spec_diags = spec_diags;
    // PIPELINE_CACHE (the user's own choice, e.g. a shared cache) overrides the file. A
    // pipeline file may only direct writes inside its own project.
    let cache_dir = match (std::env::var_os("PIPELINE_CACHE"), &spec.cache) {
        (Some(env), _) if !env.is_empty() => PathBuf::from(env),
        (_, Some(c)) => {
            let dir = base_dir.join(c);
            let root = project_root(&base_dir);
            let abs = |p: &Path| lexical(&std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
            let (resolved, root) = (lexical(&abs(&base_dir).join(c)), abs(&root));
            if !resolved.starts_with(&root) {
                spec_diags.push(
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
            dir
        }
        (_, None) => project_root(&base_dir).join("cache"),
    };
    // Images and label files are read from inside the project too, or from folders the user
    // lists in PIPELINE_DATA_ROOTS (colon-separated), never from wherever a file points.
    let abs = |p: &Path| lexical(&std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    let root = abs(&project_root(&base_dir));
    let allowed: Vec<PathBuf> = std::iter::once(root.clone())
        .chain(
            std::env::var_os("PIPELINE_DATA_ROOTS")
                .map(|v| {
                    std::env::split_paths(&v)
                        .filter(|p| !p.as_os_str().is_empty())
                        .map(|p| abs(&p))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .collect();
    for st in &spec.stages {
        if let Params::Ingest(ing) = &st.params {
            for (field, value) in [("path", Some(&ing.path)), ("csv", ing.csv.as_ref())] {
                let Some(value) = value else { continue };
                let resolved = lexical(&abs(&base_dir).join(value));
                if !allowed.iter().any(|a| resolved.starts_with(a)) {
                    spec_diags.push(
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
    check(spec, spec_diags, file.to_path_buf(), base_dir, cache_dir).map_err(|mut d| {
        d.sort_by_key(|x| x.span.map(|s| (s.line, s.col)));
        fail(d, source)
    })
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

/// Links inputs, orders the stages and checks the pipeline as a whole.
fn check(
    spec: PipelineSpec,
    mut diags: Vec<Diagnostic>,
    file: PathBuf,
    base_dir: PathBuf,
    cache_dir: PathBuf,
) -> Result<Plan, Vec<Diagnostic>> {
    // Stages that cannot be checked further: their own problems were already reported.
    let mut broken = vec![false; spec.stages.len()];
    let names: BTreeMap<&str, usize> = spec
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut inputs = vec![Vec::new(); spec.stages.len()];
    for (i, s) in spec.stages.iter().enumerate() {
        let (least, most) = s.params.input_count();
        if s.inputs.len() < least || s.inputs.len() > most {
            let msg = if most == 0 {
                format!("stage `{}` (kind `{}`) takes no input", s.name, s.params.kind())
            } else if least == most {
                format!(
                    "stage `{}` (kind `{}`) takes exactly {least} input, found {}",
                    s.name,
                    s.params.kind(),
                    s.inputs.len()
                )
            } else {
                format!(
                    "stage `{}` (kind `{}`) takes {least} to {most} inputs, found {}",
                    s.name,
                    s.params.kind(),
                    s.inputs.len()
                )
            };
            let span = s.inputs.first().map_or(s.span, |(_, sp)| *sp);
            diags.push(Diagnostic::new(span, msg));
            broken[i] = true;
            continue;
        }
        for (name, span) in &s.inputs {
            match names.get(name.as_str()) {
                Some(&j) if j == i => {
                    diags.push(Diagnostic::new(
                        *span,
                        format!("stage `{}` names itself as its input", s.name),
                    ));
                    broken[i] = true;
                }
                Some(&j) => inputs[i].push(j),
                None if spec.declared.contains(name) => broken[i] = true,
                None => {
                    broken[i] = true;
                    let mut d = Diagnostic::new(
                        *span,
                        format!(
                            "stage `{}` takes input from `{name}`, but there is no such stage",
                            s.name
                        ),
                    );
                    d = match did_you_mean(name, names.keys().copied()) {
                        Some(m) => d.with_help(format!("did you mean `{m}`?")),
                        None => d.with_help(format!(
                            "stages: {}",
                            names.keys().copied().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    diags.push(d);
                }
            }
        }
    }
    let order = match topo_order(&inputs) {
        Ok(o) => o,
        Err(cycle) => {
            let path: Vec<&str> = cycle.iter().map(|&i| spec.stages[i].name.as_str()).collect();
            let first = &spec.stages[cycle[0]];
            diags.push(
                Diagnostic::new(first.span, format!("the stages form a cycle: {}", path.join(" -> ")))
                    .with_help("a stage cannot depend on its own output; change one `input` to break the cycle"),
            );
            return Err(diags);
        }
    };
    // Flow checks in run order: where pixels and partitions exist.
    let mut has_pixels = vec![false; spec.stages.len()];
    let mut has_partition = vec![false; spec.stages.len()];
    // Stages whose output is a model, and stages with a `validate` upstream.
    let mut is_model = vec![false; spec.stages.len()];
    let mut validated = vec![false; spec.stages.len()];
    for &i in &order {
        let s = &spec.stages[i];
        if broken[i] || inputs[i].iter().any(|&j| broken[j]) {
            broken[i] = true;
            continue;
        }
        let (in_pixels, in_partition) = inputs[i]
            .first()
            .map_or((false, false), |&j| (has_pixels[j], has_partition[j]));
        let in_model = inputs[i].first().is_some_and(|&j| is_model[j]);
        let in_validated = inputs[i].first().is_some_and(|&j| validated[j]);
        if in_model && !matches!(s.params, Params::Evaluate(_)) {
            diags.push(
                Diagnostic::new(
                    s.span,
                    format!("stage `{}` takes a dataset, but its input is a model", s.name),
                )
                .with_help("only `evaluate` takes a `train` stage as input"),
            );
            broken[i] = true;
            continue;
        }
        validated[i] = in_validated || matches!(s.params, Params::Validate(_));
        let (pixels, partition) = match &s.params {
            Params::Train(t) => {
                if !in_pixels || !in_partition {
                    diags.push(
                        Diagnostic::new(
                            s.span,
                            format!(
                                "stage `{}` trains on pixels of a split dataset; its input has none",
                                s.name
                            ),
                        )
                        .with_help("take the input from `validate` (after resize, normalization and split)"),
                    );
                }
                if !in_validated && !t.unvalidated {
                    diags.push(
                        Diagnostic::new(s.span, format!("stage `{}` trains on data that no `validate` stage checked", s.name))
                            .with_help(
                                "add a `validate` stage before it (it refuses integer pixels, NaNs, leakage and inconsistent \
                                 preprocessing), or set `unvalidated: true` to train anyway (warned on every run)",
                            ),
                    );
                }
                is_model[i] = true;
                (false, false)
            }
            Params::Evaluate(_) => {
                if !in_model {
                    diags.push(
                        Diagnostic::new(
                            s.span,
                            format!("the first input of stage `{}` must be a `train` stage", s.name),
                        )
                        .with_help("write `input: [train]` or `input: [train, <dataset stage>]`"),
                    );
                }
                if let Some(&j) = inputs[i].get(1)
                    && (!has_pixels[j] || !has_partition[j] || is_model[j])
                {
                    diags.push(Diagnostic::new(
                        s.span,
                        format!(
                            "the second input of stage `{}` must be a split dataset with pixels",
                            s.name
                        ),
                    ));
                }
                (false, false)
            }
            Params::Ingest(_) => (false, false),
            Params::Split(_) => {
                if in_partition {
                    diags.push(
                        Diagnostic::new(
                            s.span,
                            format!("stage `{}` splits data that is already split upstream", s.name),
                        )
                        .with_help("keep one `split` stage per chain"),
                    );
                }
                (in_pixels, true)
            }
            Params::Resize(_) => {
                if in_pixels {
                    diags.push(
                        Diagnostic::new(
                            s.span,
                            format!(
                                "stage `{}` resizes the source images, but its input already holds pixels",
                                s.name
                            ),
                        )
                        .with_help("take its input from the `ingest` stage (or a `split` right after it)"),
                    );
                }
                (true, in_partition)
            }
            Params::MeanSubtract(_) | Params::Normalize(_) | Params::Validate(_) => {
                if !in_pixels {
                    diags.push(
                        Diagnostic::new(
                            s.span,
                            format!(
                                "stage `{}` (kind `{}`) needs pixels, but no `resize` stage is upstream of it",
                                s.name,
                                s.params.kind()
                            ),
                        )
                        .with_help("add a `resize` stage before it; it decodes the images"),
                    );
                }
                (true, in_partition)
            }
        };
        if s.params.fits_statistics() && !in_partition {
            diags.push(
                Diagnostic::new(s.span, format!("stage `{}` fits statistics on the data, but no `split` stage is upstream of it", s.name))
                    .with_help(
                        "statistics fitted on all rows would include the val and test images, leaking them into the preprocessing of the \
                         training data; add a `split` stage before it so statistics are computed on `train` rows only, or use constants",
                    ),
            );
        }
        has_pixels[i] = pixels;
        has_partition[i] = partition;
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Plan {
        spec,
        file,
        base_dir,
        cache_dir,
        order,
        inputs,
    })
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
