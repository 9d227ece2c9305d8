//! The pipeline file as typed structs: what the user wrote, checked field by field.
//!
//! [`parse`] turns the span-carrying YAML tree into a [`PipelineSpec`]. Every field is typed
//! and range-checked here, unknown keys get a "did you mean", and every problem is collected
//! (not just the first) with its position. Cross-stage checks (inputs exist, no cycles, fitted
//! statistics need a split upstream) belong to [`crate::plan`].

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Span};
use crate::stage::{self, Params};
use crate::suggest::did_you_mean;
use crate::yaml::{Node, Value};

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

/// Reads the fields of one YAML mapping, remembering which keys were consumed so unknown
/// keys can be reported with a suggestion.
pub struct Fields<'a> {
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    /// The mapping's own span (for "missing field" errors).
    pub span: Span,
    /// What this mapping is, for messages ("stage `resize`").
    pub what: String,
    /// Required keys found missing, with the index of their diagnostic (dropped again when
    /// a misspelled key explains them).
    missing: Vec<(String, usize)>,
}

impl<'a> Fields<'a> {
    pub fn new(node: &'a Node, what: impl Into<String>, diags: &mut Vec<Diagnostic>) -> Option<Self> {
        let what = what.into();
        match &node.value {
            Value::Map(entries) => Some(Fields {
                entries,
                used: vec![false; entries.len()],
                span: node.span,
                what,
                missing: Vec::new(),
            }),
            _ => {
                diags.push(Diagnostic::new(
                    node.span,
                    format!("{what} must be a mapping of `key: value`, found {}", node.describe()),
                ));
                None
            }
        }
    }

    /// The value of `key`, marking it as known.
    pub fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// The value of a required `key`; reports it missing otherwise.
    pub fn require(&mut self, key: &str, hint: &str, diags: &mut Vec<Diagnostic>) -> Option<&'a Node> {
        let v = self.get(key);
        if v.is_none() {
            self.missing.push((key.to_string(), diags.len()));
            diags.push(
                Diagnostic::new(self.span, format!("{} is missing `{key}`", self.what)).with_help(hint.to_string()),
            );
        }
        v
    }

    /// Reports every key that no `get` asked for, suggesting the closest known one.
    pub fn finish(self, known: &[&str], diags: &mut Vec<Diagnostic>) {
        let mut explained = Vec::new();
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let name = k.as_str().unwrap_or("?");
            let mut d = Diagnostic::new(k.span, format!("unknown param `{name}` in {}", self.what));
            d = match did_you_mean(name, known.iter().copied()) {
                Some(s) => {
                    if let Some((_, at)) = self.missing.iter().find(|(m, _)| m == s) {
                        explained.push(*at);
                    }
                    d.with_help(format!("did you mean `{s}`?"))
                }
                None => d.with_help(format!("known params: {}", known.join(", "))),
            };
            diags.push(d);
        }
        // "missing `size`" says nothing more than "unknown `sise`; did you mean `size`?".
        explained.sort_unstable();
        for at in explained.into_iter().rev() {
            diags.remove(at);
        }
    }
}

/// Typed readers for scalar fields; each reports a precise problem and returns `None`.
pub fn get_str(node: &Node, field: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match node.as_str() {
        Some(s) => Some(s.to_string()),
        None => {
            diags.push(Diagnostic::new(
                node.span,
                format!("`{field}` must be a string, found {}", node.describe()),
            ));
            None
        }
    }
}

pub fn get_f64(node: &Node, field: &str, range: (f64, f64), diags: &mut Vec<Diagnostic>) -> Option<f64> {
    match node.as_f64() {
        Some(v) if v.is_finite() && v >= range.0 && v <= range.1 => Some(v),
        Some(v) => {
            diags.push(Diagnostic::new(
                node.span,
                format!(
                    "`{field}` must be a finite number in [{}, {}], found {v}",
                    range.0, range.1
                ),
            ));
            None
        }
        None => {
            diags.push(Diagnostic::new(
                node.span,
                format!("`{field}` must be a number, found {}", node.describe()),
            ));
            None
        }
    }
}

pub fn get_u64(node: &Node, field: &str, range: (u64, u64), diags: &mut Vec<Diagnostic>) -> Option<u64> {
    match node.as_i64() {
        Some(v) if v >= 0 && (v as u64) >= range.0 && (v as u64) <= range.1 => Some(v as u64),
        _ => {
            diags.push(Diagnostic::new(
                node.span,
                format!(
                    "`{field}` must be a whole number in [{}, {}], found {}",
                    range.0,
                    range.1,
                    node.describe()
                ),
            ));
            None
        }
    }
}

/// A fixed-length list of numbers, e.g. `mean: [123.68, 116.78, 103.94]`.
pub fn get_f64_list<const N: usize>(
    node: &Node,
    field: &str,
    range: (f64, f64),
    diags: &mut Vec<Diagnostic>,
) -> Option<[f64; N]> {
    let Some(items) = node.as_seq().filter(|s| s.len() == N) else {
        diags.push(Diagnostic::new(
            node.span,
            format!("`{field}` must be a list of {N} numbers, found {}", node.describe()),
        ));
        return None;
    };
    let mut out = [0.0; N];
    let mut ok = true;
    for (slot, item) in out.iter_mut().zip(items) {
        match get_f64(item, field, range, diags) {
            Some(v) => *slot = v,
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One of a closed set of words, e.g. `filter: bilinear`.
pub fn get_choice<T: Copy>(node: &Node, field: &str, choices: &[(&str, T)], diags: &mut Vec<Diagnostic>) -> Option<T> {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let Some(text) = node.as_str() else {
        diags.push(Diagnostic::new(
            node.span,
            format!(
                "`{field}` must be one of {}, found {}",
                names.join(", "),
                node.describe()
            ),
        ));
        return None;
    };
    if let Some((_, v)) = choices.iter().find(|(n, _)| *n == text) {
        return Some(*v);
    }
    let mut d = Diagnostic::new(
        node.span,
        format!("`{field}: {text}` is not one of {}", names.join(", ")),
    );
    if let Some(s) = did_you_mean(text, names.iter().copied()) {
        d = d.with_help(format!("did you mean `{s}`?"));
    }
    diags.push(d);
    None
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
        &format!("add `kind:` (one of {})", stage::KINDS.join(", ")),
        diags,
    )?;
    let kind = get_str(kind_node, "kind", diags)?;
    if !stage::KINDS.contains(&kind.as_str()) {
        let mut d = Diagnostic::new(kind_node.span, format!("unknown stage kind `{kind}`"));
        d = match did_you_mean(&kind, stage::KINDS.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(format!("available kinds: {}", stage::KINDS.join(", "))),
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
    let params = stage::parse_params(&kind, &mut fields, diags);
    let mut known: Vec<&str> = vec!["kind", "input"];
    known.extend(stage::param_names(&kind));
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
        let value = match crate::yaml::parse(raw) {
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

/// Canonical JSON of a value for fingerprints: object keys sorted (serde_json's map is a
/// BTreeMap), numbers in serde_json's shortest round-trip form.
pub fn canonical(value: &serde_json::Value) -> String {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}
