//! The pipeline file as typed structs: what the user wrote, checked field by field.
//!
//! [`parse`] turns the span-carrying YAML tree into a [`PipelineSpec`]. Every field is typed
//! and range-checked here, unknown keys get a "did you mean", and every problem is collected
//! (not just the first) with its position. Cross-stage checks (inputs exist, no cycles, fitted
//! statistics need a split upstream) belong to [`crate::pipeline::plan`].

use crate::source::diag::{Diagnostic, Span};
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
    pub params: Params,
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
                    if let Some(s) = parse_stage(stage_name, key.span, body, previous.as_deref(), &mut diags) {
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
    Some(StageSpec {
        name: name.to_string(),
        span,
        inputs,
        params: params?,
    })
}

/// Applies `--set stage.param=value` overrides to the YAML tree before it is typed, so an
/// override is checked exactly like the file's own text.
pub fn apply_overrides(root: &mut Node, sets: &[String]) -> Result<(), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    for set in sets {
        let Some((target, raw)) = set.split_once('=') else {
            diags.push(Diagnostic::new(
                None,
                format!("--set `{set}` must look like `stage.param=value`"),
            ));
            continue;
        };
        let Some((stage_name, param)) = target.split_once('.') else {
            diags.push(Diagnostic::new(
                None,
                format!("--set `{set}` must look like `stage.param=value`"),
            ));
            continue;
        };
        let value = match crate::source::yaml::parse(raw) {
            Ok(v) => v,
            Err(e) => {
                diags.push(Diagnostic::new(
                    None,
                    format!("--set {target}: value `{raw}` is not valid YAML: {}", e.message),
                ));
                continue;
            }
        };
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
            diags.push(Diagnostic::new(
                None,
                format!("--set {target}: the file has no `stages` mapping"),
            ));
            continue;
        };
        let names: Vec<String> = stage_entries
            .iter()
            .filter_map(|(k, _)| k.as_str().map(String::from))
            .collect();
        let Some((_, body)) = stage_entries.iter_mut().find(|(k, _)| k.as_str() == Some(stage_name)) else {
            let mut d = Diagnostic::new(None, format!("--set {target}: there is no stage `{stage_name}`"));
            if let Some(s) = did_you_mean(stage_name, names.iter().map(String::as_str)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            diags.push(d);
            continue;
        };
        let Value::Map(params) = &mut body.value else {
            continue;
        };
        // An override keeps pointing at the line it replaces, so errors stay locatable.
        let value = Node::new(value.value, Span::default());
        match params.iter_mut().find(|(k, _)| k.as_str() == Some(param)) {
            Some((k, v)) => *v = Node::new(value.value, k.span),
            None => params.push((
                Node::new(
                    Value::Scalar {
                        text: param.to_string(),
                        quoted: false,
                    },
                    body.span,
                ),
                Node::new(value.value, body.span),
            )),
        }
    }
    if diags.is_empty() { Ok(()) } else { Err(diags) }
}
