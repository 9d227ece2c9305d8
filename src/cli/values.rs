//! Completion candidates for the values of flags, computed at each TAB from the command line
//! being completed: `--stage`, `--force` and `--against` complete the stage names of the
//! pipeline file already on the line, `--set` its `stage.param=` names, and
//! `diagnose --check` the checklist's names.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;

use crate::diagnose::diagnosis::CHECKS;
use crate::pipeline::spec::{self, PipelineSpec};
use crate::source::yaml;
use crate::stage::params::param_names;

/// Stage names of the pipeline file on the command line being completed.
pub fn stage_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let Some(spec) = spec_on_command_line() else {
        return Vec::new();
    };
    spec.stages
        .iter()
        .filter(|s| s.name.starts_with(current.as_ref()))
        .map(|s| CompletionCandidate::new(&s.name).help(Some(s.params.kind().into())))
        .collect()
}

/// `stage.` for each stage, then `stage.param=` for each param of that stage's kind.
pub fn set_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let Some(spec) = spec_on_command_line() else {
        return Vec::new();
    };
    let candidates: Vec<String> = match current.split_once('.') {
        None => spec.stages.iter().map(|s| format!("{}.", s.name)).collect(),
        Some((stage, _)) => spec
            .stages
            .iter()
            .filter(|s| s.name == stage)
            .flat_map(|s| {
                param_names(s.params.kind())
                    .iter()
                    .map(move |p| format!("{}.{p}=", s.name))
            })
            .collect(),
    };
    candidates
        .into_iter()
        .filter(|c| c.starts_with(current.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// The names of `diagnose`'s checks.
pub fn check_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    CHECKS
        .iter()
        .filter(|c| c.starts_with(current.as_ref()))
        .map(|c| CompletionCandidate::new(*c))
        .collect()
}

/// The first word of the line being completed that names a readable pipeline file, parsed
/// (`None` when there is none, or it does not parse: completion then offers nothing).
fn spec_on_command_line() -> Option<PipelineSpec> {
    let words: Vec<OsString> = std::env::args_os().skip_while(|a| a != "--").skip(1).collect();
    pipeline_file(&words).and_then(|path| {
        let source = std::fs::read_to_string(path).ok()?;
        let root = yaml::parse(&source).ok()?;
        spec::parse(&root).ok().map(|(spec, _)| spec)
    })
}

/// The first of `words` that ends in `.yaml` or `.yml` and is a file.
fn pipeline_file(words: &[OsString]) -> Option<PathBuf> {
    words
        .iter()
        .map(PathBuf::from)
        .find(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml") && p.is_file())
}
