//! A small YAML document tree that remembers where every node came from.
//!
//! Pipeline files are parsed with `saphyr-parser` (a maintained YAML 1.2 parser) into this
//! tree of [`Node`]s, each carrying its [`Span`], so that every later check can point at the
//! exact text it is unhappy with. Scalars are kept as text and typed by the spec layer, which
//! knows what each field should be. Hostile documents are refused here: aliases (the engine of
//! "billion laughs" bombs) are not supported, nesting is limited, keys must be unique.

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::source::diag::{Diagnostic, Span};

/// Deepest nesting of sequences and mappings accepted in a pipeline file.
const MAX_DEPTH: usize = 64;
/// Largest pipeline file accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    /// Scalar text; `quoted` scalars are always strings.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    pub fn new(value: Value, span: Span) -> Self {
        Node { value, span }
    }

    /// What this node is, for messages like "expected a number, found a list".
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".into(),
            Value::Scalar { text, .. } => format!("`{text}`"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The text of a scalar (quoted or plain).
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain (unquoted) scalar read as a YAML 1.2 core-schema number.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.value {
            Value::Scalar { text, quoted: false } => parse_number(text),
            _ => None,
        }
    }

    /// A plain scalar that is a whole number.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar { text, quoted: false } => {
                let t = text.replace('_', "");
                t.parse::<i64>().ok()
            }
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

fn parse_number(text: &str) -> Option<f64> {
    match text {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let t = text.replace('_', "");
    let first = t.chars().next()?;
    if !(first.is_ascii_digit() || matches!(first, '-' | '+' | '.')) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Converts a parser position (1-based line, 0-based column) into our [`Span`].
fn span_of(s: &saphyr_parser::Span, len: usize) -> Span {
    Span::at(s.start.line(), s.start.col() + 1, len)
}

/// Parses one YAML document. An empty document is [`Value::Null`].
pub fn parse(source: &str) -> Result<Node, Diagnostic> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::new(
            None,
            format!(
                "the file is {} bytes; pipeline files are limited to {MAX_SOURCE_BYTES} bytes",
                source.len()
            ),
        ));
    }
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    for item in Parser::new_from_str(source) {
        let (event, span) = item.map_err(|e| {
            let m = e.marker();
            Diagnostic::new(
                Span::at(m.line(), m.col() + 1, 1),
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {
                continue;
            }
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::new(
                        span_of(&span, 3),
                        "a pipeline file holds one YAML document, found a second one",
                    )
                    .with_help("remove the `---` separator and everything after it, or split the file"));
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(Diagnostic::new(
                    span_of(&span, 1),
                    "YAML aliases (`*name`) are not supported in pipeline files",
                )
                .with_help("write the value out in full where it is needed"));
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::new(
                        span_of(&span, 1),
                        format!("the document is nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let value = if matches!(event, Event::SequenceStart(..)) {
                    Value::Seq(Vec::new())
                } else {
                    Value::Map(Vec::new())
                };
                stack.push((Node::new(value, span_of(&span, 1)), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some((node, _)) => node,
                None => continue,
            },
            Event::Scalar(text, style, _, _) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let len = span.end.index().saturating_sub(span.start.index()).max(1);
                let value = if !quoted && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        quoted,
                    }
                };
                Node::new(value, span_of(&span, len))
            }
        };
        attach(&mut stack, &mut root, node)?;
    }
    Ok(root.unwrap_or(Node::new(Value::Null, Span::default())))
}

/// Adds a finished node to its parent (or makes it the root).
fn attach(stack: &mut [(Node, Option<Node>)], root: &mut Option<Node>, node: Node) -> Result<(), Diagnostic> {
    let Some((parent, pending_key)) = stack.last_mut() else {
        *root = Some(node);
        return Ok(());
    };
    match &mut parent.value {
        Value::Seq(items) => items.push(node),
        Value::Map(entries) => match pending_key.take() {
            None => {
                if let Some(text) = node.as_str()
                    && let Some((first, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(text))
                {
                    return Err(Diagnostic::new(
                        node.span,
                        format!(
                            "duplicate key `{text}` (first defined at line {}:{})",
                            first.span.line, first.span.col
                        ),
                    )
                    .with_help("keep one of the two; YAML would silently use the last one"));
                }
                *pending_key = Some(node);
            }
            Some(key) => entries.push((key, node)),
        },
        _ => unreachable!("only collections are pushed on the stack"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_types() {
        let doc = parse("name: x\nstages:\n  a:\n    size: [32, 64]\n    s: '12'\n").unwrap();
        let map = doc.as_map().unwrap();
        assert_eq!(map[0].0.as_str(), Some("name"));
        let stages = map[1].1.as_map().unwrap();
        let a = stages[0].1.as_map().unwrap();
        assert_eq!(a[0].0.span, Span::at(4, 5, 4));
        let size = a[0].1.as_seq().unwrap();
        assert_eq!(size[1].as_i64(), Some(64));
        assert_eq!(size[1].span.col, 16);
        assert_eq!(a[1].1.as_f64(), None, "quoted scalars are strings");
    }

    #[test]
    fn refuses_aliases_and_duplicate_keys() {
        let bomb = "a: &a [1, 2]\nb: [*a, *a]\n";
        assert!(parse(bomb).unwrap_err().message.contains("aliases"));
        let dup = "a: 1\nb: 2\na: 3\n";
        let err = parse(dup).unwrap_err();
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
        assert_eq!(err.span.unwrap().line, 3);
    }

    #[test]
    fn refuses_deep_nesting_and_bad_syntax() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        assert!(parse("a: [1, 2\n").is_err());
    }

    #[test]
    fn numbers_follow_the_core_schema() {
        let doc = parse("[1, -2.5, 1e3, .nan, abc, 0x10]").unwrap();
        let v: Vec<Option<f64>> = doc.as_seq().unwrap().iter().map(Node::as_f64).collect();
        assert_eq!(v[0], Some(1.0));
        assert_eq!(v[1], Some(-2.5));
        assert_eq!(v[2], Some(1000.0));
        assert!(v[3].unwrap().is_nan());
        assert_eq!(v[4], None);
    }
}
