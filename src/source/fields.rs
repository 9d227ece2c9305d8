//! Typed reading of one YAML mapping: the `Fields` a stage kind parses its params from, and
//! the scalar readers that check a value's type and range and report a precise problem.
//!
//! Shared by the pipeline file's top level and every stage kind, so that a wrong value says
//! the same thing wherever it is written.

use crate::source::diag::{Diagnostic, Span};
use crate::source::suggest::did_you_mean;
use crate::source::yaml::{Node, Value};

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

/// A finite number within `range` (inclusive).
pub fn get_f64(node: &Node, field: &str, range: (f64, f64), diags: &mut Vec<Diagnostic>) -> Option<f64> {
    let Some(v) = node.as_f64() else {
        diags.push(Diagnostic::new(
            node.span,
            format!("`{field}` must be a number, found {}", node.describe()),
        ));
        return None;
    };
    within(
        node,
        field,
        Some(v).filter(|v| v.is_finite()),
        range,
        "finite number",
        v,
        diags,
    )
}

/// A whole number within `range` (inclusive).
pub fn get_u64(node: &Node, field: &str, range: (u64, u64), diags: &mut Vec<Diagnostic>) -> Option<u64> {
    let value = node.as_i64().and_then(|v| u64::try_from(v).ok());
    within(node, field, value, range, "whole number", node.describe(), diags)
}

/// `value` when it is there and inside `range` (inclusive); otherwise reports that `field`
/// must be a `noun` in the range, and what was `found`.
fn within<T: PartialOrd + std::fmt::Display>(
    node: &Node,
    field: &str,
    value: Option<T>,
    range: (T, T),
    noun: &str,
    found: impl std::fmt::Display,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match value {
        Some(v) if v >= range.0 && v <= range.1 => Some(v),
        _ => {
            diags.push(Diagnostic::new(
                node.span,
                format!(
                    "`{field}` must be a {noun} in [{}, {}], found {found}",
                    range.0, range.1
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value `get` reads from the YAML scalar `text`, and the messages it reports.
    fn read<T>(text: &str, get: impl Fn(&Node, &mut Vec<Diagnostic>) -> Option<T>) -> (Option<T>, Vec<String>) {
        let node = crate::source::yaml::parse(text).unwrap();
        let mut diags = Vec::new();
        let value = get(&node, &mut diags);
        (value, diags.into_iter().map(|d| d.message).collect())
    }

    #[test]
    fn numbers_outside_their_range_say_the_range() {
        let f64_in = |text| read(text, |n, d| get_f64(n, "scale", (0.0, 1.0), d));
        assert_eq!(f64_in("0.5"), (Some(0.5), vec![]));
        assert_eq!(f64_in("1"), (Some(1.0), vec![]));
        let out = "`scale` must be a finite number in [0, 1], found 1.5".to_string();
        assert_eq!(f64_in("1.5"), (None, vec![out]));
        let nan = "`scale` must be a finite number in [0, 1], found NaN".to_string();
        assert_eq!(f64_in(".nan"), (None, vec![nan]));
        let text = "`scale` must be a number, found `big`".to_string();
        assert_eq!(f64_in("big"), (None, vec![text]));

        let u64_in = |text| read(text, |n, d| get_u64(n, "epochs", (1, 10), d));
        assert_eq!(u64_in("10"), (Some(10), vec![]));
        for bad in ["0", "11", "-3", "2.5", "many"] {
            let msg = format!("`epochs` must be a whole number in [1, 10], found `{bad}`");
            assert_eq!(u64_in(bad), (None, vec![msg]));
        }
    }
}
