//! The pipeline file as typed structs: what the user wrote, checked field by field.
//!
//! [`parse`] turns the span-carrying YAML tree into a [`PipelineSpec`]. Every field is typed
//! and range-checked here, unknown keys get a "did you mean", and every problem is collected
//! (not just the first) with its position. Cross-stage checks (inputs exist, no cycles, fitted
//! statistics need a split upstream) belong to [`crate::pipeline::plan`].

use crate::source::diag::{Diagnostic, SET_PREFIX, SetArg, Span};
use crate::source::fields::{Fields, get_str, get_u64};
use crate::source::suggest::did_you_mean;
use crate::source::yaml::{Node, Value};
use crate::stage::params::{self, Params};

/// The whole pipeline file.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    pub name: String,
    /// Cache directory as written (relative to the pipeline file), if given, and where.
    pub cache: Option<String>,
    pub cache_span: Option<Span>,
    pub seed: u64,
    /// The stages that parsed without problems.
    pub stages: Vec<StageSpec>,
    /// Every stage name in the file, including those with problems, so a reference to a
    /// broken stage is not also reported as a reference to a missing one.
    pub declared: Vec<String>,
}

/// One entry of `stages:`.
#[derive(Clone, Debug)]
pub struct StageSpec {
    pub name: String,
    pub span: Span,
    /// Input stage names with where they were written; empty for `ingest`.
    pub inputs: Vec<(String, Span)>,
    /// With the pipeline's `seed` filled in where the stage uses one and sets none.
    pub params: Params,
    /// Whether `params` took the pipeline's `seed`.
    pub seed_inherited: bool,
}

impl StageSpec {
    /// The params as they are used, for people: `train: 0.7, …, seed: 42 (the pipeline's)`.
    pub fn params_shown(&self) -> String {
        let serde_json::Value::Object(map) = self.params.to_json() else {
            return self.params.to_json().to_string();
        };
        let shown: Vec<String> = map
            .iter()
            .map(|(k, v)| match (k.as_str(), self.seed_inherited) {
                ("seed", true) => format!("seed: {v} (the pipeline's)"),
                _ => format!("{k}: {v}"),
            })
            .collect();
        shown.join(", ")
    }
}

/// Parses the YAML tree into a typed spec: the stages that parsed, and every problem found
/// (the spec is only usable when there are none).
pub fn parse(root: &Node) -> Result<(PipelineSpec, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    if root.is_null() {
        diags.push(
            Diagnostic::new(None, "the pipeline file is empty")
                .with_help("start with `name:`, `seed:` and a `stages:` mapping; see README.md"),
        );
        return Err(diags);
    }
    let Some(mut top) = Fields::new(root, "the pipeline file", &mut diags) else {
        return Err(diags);
    };
    let name = top
        .require("name", "add `name: my_pipeline` at the top", &mut diags)
        .and_then(|n| get_str(n, "name", &mut diags))
        .unwrap_or_default();
    if !name.is_empty() && !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        diags.push(Diagnostic::new(
            top.span,
            format!("pipeline name `{name}` may only hold letters, digits, `-`, `_` and `.`"),
        ));
    }
    let cache_span = top.get("cache").map(|n| n.span);
    let cache = top.get("cache").and_then(|n| get_str(n, "cache", &mut diags));
    let seed = top
        .get("seed")
        .and_then(|n| get_u64(n, "seed", (0, u64::MAX >> 1), &mut diags))
        .unwrap_or(0);
    let mut stages = Vec::new();
    let mut declared = Vec::new();
    if let Some(stages_node) = top.require("stages", "add a `stages:` mapping of named stages", &mut diags) {
        match stages_node.as_map() {
            Some(entries) if !entries.is_empty() => {
                let mut previous: Option<String> = None;
                for (key, body) in entries {
                    let Some(stage_name) = key.as_str() else {
                        diags.push(Diagnostic::new(key.span, "a stage name must be a string"));
                        continue;
                    };
                    if let Some(s) = parse_stage(stage_name, key.span, body, previous.as_deref(), seed, &mut diags) {
                        stages.push(s);
                    }
                    previous = Some(stage_name.to_string());
                    declared.push(stage_name.to_string());
                }
            }
            _ => diags.push(Diagnostic::new(
                stages_node.span,
                format!(
                    "`stages` must be a mapping of stage names to stages, found {}",
                    stages_node.describe()
                ),
            )),
        }
    }
    top.finish(&["name", "cache", "seed", "stages"], &mut diags);
    Ok((
        PipelineSpec {
            name,
            cache,
            cache_span,
            seed,
            stages,
            declared,
        },
        diags,
    ))
}

fn parse_stage(
    name: &str,
    span: Span,
    body: &Node,
    previous: Option<&str>,
    seed: u64,
    diags: &mut Vec<Diagnostic>,
) -> Option<StageSpec> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || name.is_empty() {
        diags.push(Diagnostic::new(
            span,
            format!("stage name `{name}` may only hold letters, digits, `_` and `-`"),
        ));
    }
    let what = format!("stage `{name}`");
    let mut fields = Fields::new(body, what.clone(), diags)?;
    fields.span = span;
    let kind_node = fields.require(
        "kind",
        &format!("add `kind:` (one of {})", params::KINDS.join(", ")),
        diags,
    )?;
    let kind = get_str(kind_node, "kind", diags)?;
    if !params::KINDS.contains(&kind.as_str()) {
        let mut d = Diagnostic::new(kind_node.span, format!("unknown stage kind `{kind}`"));
        d = match did_you_mean(&kind, params::KINDS.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(format!("available kinds: {}", params::KINDS.join(", "))),
        };
        diags.push(d);
        return None;
    }
    let inputs = match fields.get("input") {
        Some(node) => match &node.value {
            Value::Scalar { text, .. } => vec![(text.clone(), node.span)],
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| get_str(i, "input", diags).map(|s| (s, i.span)))
                .collect(),
            _ => {
                diags.push(Diagnostic::new(
                    node.span,
                    format!("`input` must name a stage, found {}", node.describe()),
                ));
                Vec::new()
            }
        },
        None if kind == "ingest" => Vec::new(),
        None => match previous {
            Some(p) => vec![(p.to_string(), span)],
            None => {
                diags.push(
                    Diagnostic::new(span, format!("{what} has no `input` and no stage before it"))
                        .with_help("add `input: <stage name>` or put an `ingest` stage first"),
                );
                Vec::new()
            }
        },
    };
    let before = diags.len();
    let params = params::parse_params(&kind, &mut fields, diags);
    let mut known: Vec<&str> = vec!["kind", "input"];
    known.extend(params::param_names(&kind));
    fields.finish(&known, diags);
    if diags.len() > before {
        return None;
    }
    let mut params = params?;
    Some(StageSpec {
        name: name.to_string(),
        span,
        inputs,
        seed_inherited: params.inherit_seed(seed),
        params,
    })
}

/// Applies `--set stage.param=value` overrides to the YAML tree before it is typed, so an
/// override is checked exactly like the file's own text. The nodes an override brings carry
/// spans into its argument (`Span::set`), so a problem with its value points at the `--set`
/// that carried it; the [`SetArg`]s say what each one replaced, for rendering.
pub fn apply_overrides(root: &mut Node, sets: &[String]) -> (Vec<SetArg>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut args = Vec::new();
    for (n, set) in (1..).zip(sets) {
        let mut arg = SetArg {
            text: set.clone(),
            ..SetArg::default()
        };
        if let Err(d) = apply_override(root, set, n, &mut arg) {
            diags.push(d);
        }
        args.push(arg);
    }
    (args, diags)
}

/// A span over the characters `from..from + len` of the `n`-th `--set` argument's text.
fn set_span(n: usize, from: usize, len: usize) -> Span {
    Span {
        line: 1,
        col: SET_PREFIX.len() + from + 1,
        len: len.max(1),
        set: n,
    }
}

/// Moves the spans of a value parsed from a `--set` argument into that argument, whose value
/// starts at character `at` of its text. A value written over several lines is underlined whole.
fn relocate(node: &mut Node, n: usize, at: usize, whole: usize) {
    node.span = match node.span.line {
        1 => set_span(n, at + node.span.col - 1, node.span.len),
        _ => set_span(n, at, whole),
    };
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| relocate(i, n, at, whole)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            relocate(k, n, at, whole);
            relocate(v, n, at, whole);
        }),
        Value::Null | Value::Scalar { .. } => {}
    }
}

/// Applies the `n`-th override, `set`, recording in `arg` what it replaced.
fn apply_override(root: &mut Node, set: &str, n: usize, arg: &mut SetArg) -> Result<(), Diagnostic> {
    let chars = |s: &str| s.chars().count();
    let parts = set.split_once('=').and_then(|(target, raw)| {
        let (stage_name, param) = target.split_once('.')?;
        Some((target, raw, stage_name, param))
    });
    let Some((target, raw, stage_name, param)) = parts else {
        return Err(Diagnostic::new(
            set_span(n, 0, chars(set)),
            format!("--set `{set}` must look like `stage.param=value`"),
        )
        .with_help("for example `--set resize.size=[64,64]` (the value in YAML syntax)"));
    };
    let at = chars(target) + 1;
    let mut value = crate::source::yaml::parse(raw).map_err(|e| {
        let span = e.span.map(|s| set_span(n, at + s.col.saturating_sub(1), 1));
        Diagnostic::new(
            span,
            format!(
                "--set {target}: the value is not valid YAML: {}",
                e.message.trim_start_matches("invalid YAML: ")
            ),
        )
    })?;
    relocate(&mut value, n, at, chars(raw));
    let stages = match &mut root.value {
        Value::Map(entries) => entries.iter_mut().find(|(k, _)| k.as_str() == Some("stages")),
        _ => None,
    };
    let Some((
        _,
        Node {
            value: Value::Map(stage_entries),
            ..
        },
    )) = stages
    else {
        return Err(Diagnostic::new(
            set_span(n, 0, chars(stage_name)),
            format!("--set {target}: the file has no `stages` mapping"),
        ));
    };
    let names: Vec<String> = stage_entries
        .iter()
        .filter_map(|(k, _)| k.as_str().map(String::from))
        .collect();
    let Some((_, body)) = stage_entries.iter_mut().find(|(k, _)| k.as_str() == Some(stage_name)) else {
        let mut d = Diagnostic::new(
            set_span(n, 0, chars(stage_name)),
            format!("--set {target}: there is no stage `{stage_name}`"),
        );
        d = match did_you_mean(stage_name, names.iter().map(String::as_str)) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(format!("the stages are {}", names.join(", "))),
        };
        return Err(d);
    };
    arg.target = Some((stage_name.to_string(), param.to_string()));
    let Value::Map(params) = &mut body.value else {
        // Not a mapping: parsing the stage reports that, against the file.
        return Ok(());
    };
    let at_param = params.iter().position(|(k, _)| k.as_str() == Some(param));
    if matches!(raw.trim(), "null" | "~") {
        // `null` removes the param: its default applies, as if the file did not say it.
        if let Some(i) = at_param {
            arg.replaces = Some(params[i].1.span);
            params.remove(i);
        }
        return Ok(());
    }
    match at_param.map(|i| &mut params[i]) {
        Some((_, v)) => {
            arg.replaces = Some(v.span);
            *v = value;
        }
        None => {
            let key = Value::Scalar {
                text: param.to_string(),
                quoted: false,
            };
            let key_span = set_span(n, chars(stage_name) + 1, chars(param));
            params.push((Node::new(key, key_span), value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid file: `resize` takes its input from the stage before it.
    const MINIMAL: &str = "\
name: tiny
seed: 7
stages:
  ingest:
    kind: ingest
    path: images
  resize:
    kind: resize
    size: [8, 8]
";

    /// The spec of `text` with `sets` applied, as `plan::load_source` gets it.
    fn spec_of(text: &str, sets: &[&str]) -> Result<(PipelineSpec, Vec<Diagnostic>), Vec<Diagnostic>> {
        let mut root = crate::source::yaml::parse(text).expect("valid YAML");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let (_, diags) = apply_overrides(&mut root, &sets);
        if !diags.is_empty() {
            return Err(diags);
        }
        parse(&root)
    }

    /// The problems of `text` with `sets` applied, from either step.
    fn problems(text: &str, sets: &[&str]) -> Vec<Diagnostic> {
        match spec_of(text, sets) {
            Ok((_, diags)) | Err(diags) => diags,
        }
    }

    fn at(line: usize, col: usize, len: usize) -> Option<Span> {
        Some(Span::at(line, col, len))
    }

    fn stage<'a>(spec: &'a PipelineSpec, name: &str) -> &'a StageSpec {
        spec.stages.iter().find(|s| s.name == name).expect("stage")
    }

    #[test]
    fn a_minimal_file_parses() {
        let (spec, diags) = spec_of(MINIMAL, &[]).unwrap();
        assert_eq!(diags, Vec::new());
        assert_eq!(
            (spec.name.as_str(), spec.seed, spec.cache.as_deref()),
            ("tiny", 7, None)
        );
        assert_eq!(spec.declared, ["ingest", "resize"]);
        let kinds: Vec<&str> = spec.stages.iter().map(|s| s.params.kind()).collect();
        assert_eq!(kinds, ["ingest", "resize"]);
        assert!(stage(&spec, "ingest").inputs.is_empty());
        let resize = stage(&spec, "resize");
        assert_eq!(resize.inputs, [("ingest".to_string(), resize.span)]);
        assert_eq!(resize.params.to_json()["size"], serde_json::json!([8, 8]));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_position() {
        let text = "\
name: tiny
seed: -1
stages:
  ingest:
    kind: ingest
  resize:
    kind: resise
";
        let diags = problems(text, &[]);
        let found: Vec<(Option<Span>, &str)> = diags.iter().map(|d| (d.span, d.message.as_str())).collect();
        assert_eq!(
            found,
            [
                (
                    at(2, 7, 2),
                    "`seed` must be a whole number in [0, 9223372036854775807], found `-1`"
                ),
                (at(4, 3, 6), "stage `ingest` is missing `path`"),
                (at(7, 11, 6), "unknown stage kind `resise`"),
            ]
        );
        assert_eq!(diags[2].help.as_deref(), Some("did you mean `resize`?"));
    }

    #[test]
    fn an_unknown_param_suggests_the_known_one_instead_of_a_missing_one() {
        let diags = problems(&MINIMAL.replace("size: [8, 8]", "sise: [8, 8]"), &[]);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "unknown param `sise` in stage `resize`");
        assert_eq!(diags[0].span, at(9, 5, 4));
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `size`?"));
    }

    #[test]
    fn a_set_replaces_a_param_and_is_checked_like_the_file() {
        let (spec, diags) = spec_of(MINIMAL, &["resize.size=[16, 16]", "resize.filter=nearest"]).unwrap();
        assert_eq!(diags, Vec::new());
        let params = stage(&spec, "resize").params.to_json();
        assert_eq!(params["size"], serde_json::json!([16, 16]));
        assert_eq!(params["filter"], "nearest");
    }

    #[test]
    fn a_set_to_null_removes_the_param_and_its_default_applies() {
        let with_filter = MINIMAL.replace("size: [8, 8]", "size: [8, 8]\n    filter: nearest");
        let (spec, diags) = spec_of(&with_filter, &["resize.filter=null"]).unwrap();
        assert_eq!(diags, Vec::new());
        let (default, _) = spec_of(MINIMAL, &[]).unwrap();
        assert_eq!(
            stage(&spec, "resize").params.to_json(),
            stage(&default, "resize").params.to_json()
        );
        // `~` too, after an earlier `--set` of the same param; an empty value is not a removal.
        let (spec, _) = spec_of(MINIMAL, &["resize.filter=nearest", "resize.filter=~"]).unwrap();
        assert_eq!(
            stage(&spec, "resize").params.to_json(),
            stage(&default, "resize").params.to_json()
        );
        assert!(
            !problems(MINIMAL, &["resize.size="]).is_empty(),
            "an empty size is refused"
        );
    }

    #[test]
    fn a_set_without_stage_param_and_value_is_refused() {
        let diags = spec_of(MINIMAL, &["resize=3", "resize.size"]).unwrap_err();
        let found: Vec<(Option<Span>, &str)> = diags.iter().map(|d| (d.span, d.message.as_str())).collect();
        assert_eq!(
            found,
            [
                (
                    Some(set_span(1, 0, 8)),
                    "--set `resize=3` must look like `stage.param=value`"
                ),
                (
                    Some(set_span(2, 0, 11)),
                    "--set `resize.size` must look like `stage.param=value`"
                ),
            ]
        );
    }

    #[test]
    fn a_set_on_an_unknown_stage_suggests_the_closest() {
        let diags = spec_of(MINIMAL, &["resise.size=[2, 2]"]).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "--set resise.size: there is no stage `resise`");
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `resize`?"));
        assert_eq!(
            diags[0].span,
            Some(set_span(1, 0, 6)),
            "the stage's name in the argument"
        );
    }

    /// The spans of `sets` applied to `text`, and what each replaced.
    fn applied(text: &str, sets: &[&str]) -> (Vec<SetArg>, Vec<Diagnostic>) {
        let mut root = crate::source::yaml::parse(text).expect("valid YAML");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let (args, mut diags) = apply_overrides(&mut root, &sets);
        if diags.is_empty() {
            diags = parse(&root).map_or_else(|d| d, |(_, d)| d);
        }
        (args, diags)
    }

    #[test]
    fn a_bad_set_value_points_into_its_argument_and_names_what_it_replaces() {
        let (args, diags) = applied(MINIMAL, &["resize.filter=nearest", "resize.size=[0, 8]"]);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].message.starts_with("`size` must be"), "{}", diags[0].message);
        // `--set resize.size=[0, 8]`: the `0` is the 20th character.
        assert_eq!(
            diags[0].span,
            Some(Span {
                line: 1,
                col: 20,
                len: 1,
                set: 2
            })
        );
        assert_eq!(args[1].target, Some(("resize".into(), "size".into())));
        assert_eq!(args[1].replaces.map(|s| s.line), Some(9), "`size: [8, 8]` is line 9");
        assert_eq!(args[0].replaces, None, "the file sets no filter");
        let shown = diags[0].render("p.yaml", MINIMAL, &args);
        assert!(shown.contains("--> the command line"), "{}", shown);
        assert!(
            shown.contains("  | --set resize.size=[0, 8]\n  |                    ^\n"),
            "{}",
            shown
        );
        assert!(
            shown.contains("overrides `size` of stage `resize`, set in p.yaml:9:"),
            "{}",
            shown
        );
        assert!(shown.contains("as `size: [8, 8]`"), "{}", shown);
    }

    #[test]
    fn a_set_that_adds_an_unknown_param_points_at_its_name() {
        let (args, diags) = applied(MINIMAL, &["resize.sise=[4, 4]"]);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "unknown param `sise` in stage `resize`");
        assert_eq!(diags[0].span, Some(set_span(1, 7, 4)));
        let shown = diags[0].render("p.yaml", MINIMAL, &args);
        assert!(
            shown.contains("adds `sise` to stage `resize`; the file does not set it"),
            "{}",
            shown
        );
        assert!(shown.contains("did you mean `size`?"), "{}", shown);
    }

    #[test]
    fn a_set_value_that_is_not_yaml_points_into_it() {
        let (_, diags) = applied(MINIMAL, &["resize.size=[1, 2"]);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0]
                .message
                .contains("--set resize.size: the value is not valid YAML"),
            "{}",
            diags[0].message
        );
        assert_eq!(diags[0].span.map(|s| s.set), Some(1));
    }
}
