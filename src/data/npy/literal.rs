//! The Python literals an `.npy` header dict is written in (`np.save` writes the dict with
//! Python's `repr`): dicts, tuples, lists, strings, integers, `True`/`False`/`None`. The header
//! parser (`header.rs`) reads the dict with [`parse_literal`] and quotes bad values back to the
//! user with [`Value`]'s `Display`, which renders them the way Python does.

use std::fmt;

/// Deepest nesting of tuples/lists/dicts the header parser follows (a real header needs 3).
const MAX_NESTING: usize = 32;

/// Parses `text` as one literal, white space around it allowed. `py2_longs` allows Python 2's
/// `3L` integers. Errors are plain messages with a character position.
pub(super) fn parse_literal(text: &str, py2_longs: bool) -> Result<Value, String> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        py2_longs,
    };
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos < parser.chars.len() {
        return Err(format!(
            "unexpected text after the header dict at character {}",
            parser.pos
        ));
    }
    Ok(value)
}

/// A Python literal as found in an `.npy` header.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
}

/// Python `repr`-like rendering, so messages quote the header the way the user's Python shows it.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        match self {
            Value::Str(s) => write!(f, "'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::None => f.write_str("None"),
            Value::Tuple(items) => {
                f.write_str("(")?;
                seq(f, items)?;
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            Value::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Value::Dict(entries) => {
                f.write_str("{")?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    write!(f, "{sep}{}: {value}", Value::Str(key.clone()))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A recursive-descent parser for the subset of Python literals `.npy` headers use: dicts,
/// tuples, lists, strings, integers, `True`/`False`/`None`. Errors are plain messages with a
/// character position; nesting depth is capped so hostile input cannot overflow the stack.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    py2_longs: bool,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self
            .peek()
            .is_some_and(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c'))
        {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_NESTING {
            return Err(format!("the header is nested too deeply (at character {})", self.pos));
        }
        self.skip_ws();
        match self.peek() {
            None => Err("the header ends where a value was expected".into()),
            Some('{') => self.dict(depth),
            Some('(') => {
                self.pos += 1;
                let (mut items, trailing_comma) = self.sequence(')', depth)?;
                // `(5)` is just 5 in Python; only `(5,)` is a 1-tuple.
                Ok(match items.pop() {
                    Some(item) if items.is_empty() && !trailing_comma => item,
                    Some(item) => {
                        items.push(item);
                        Value::Tuple(items)
                    }
                    None => Value::Tuple(items),
                })
            }
            Some('[') => {
                self.pos += 1;
                Ok(Value::List(self.sequence(']', depth)?.0))
            }
            Some(quote @ ('\'' | '"')) => self.string(quote).map(Value::Str),
            Some(c) if c == '-' || c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::None),
                    _ => Err(format!("unexpected name {word:?} at character {start}")),
                }
            }
            Some(c) => Err(format!("unexpected character {c:?} at character {}", self.pos)),
        }
    }

    /// Items up to `close` (the opener is consumed); also says whether a comma followed the last.
    fn sequence(&mut self, close: char, depth: usize) -> Result<(Vec<Value>, bool), String> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            trailing_comma = false;
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or '{close}' at character {}", self.pos)),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, String> {
        self.pos += 1; // '{'
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(Value::Dict(entries));
            }
            let at = self.pos;
            let Value::Str(key) = self.value(depth + 1)? else {
                return Err(format!("dict keys must be strings (at character {at})"));
            };
            self.skip_ws();
            if self.peek() != Some(':') {
                return Err(format!("expected ':' after a dict key at character {}", self.pos));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                _ => return Err(format!("expected ',' or '}}' at character {}", self.pos)),
            }
        }
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => return Err(format!("unterminated string starting at character {start}")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    // Enough for `\'` and `\\`; NumPy never writes other escapes in a header.
                    let escaped = self.chars.get(self.pos + 1).copied();
                    out.extend(escaped);
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> Result<Value, String> {
        let start = self.pos;
        let negative = self.peek() == Some('-');
        if negative {
            self.pos += 1;
        }
        let mut n: i128 = 0;
        let mut digits = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(d)))
                .ok_or_else(|| format!("integer too large at character {start}"))?;
            digits += 1;
            self.pos += 1;
        }
        if digits == 0 {
            return Err(format!("expected digits at character {}", self.pos));
        }
        if self.py2_longs && matches!(self.peek(), Some('L' | 'l')) {
            self.pos += 1; // Python 2 long literal, e.g. `(3L, 4L)`
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            return Err(format!("unsupported number syntax at character {start}"));
        }
        Ok(Value::Int(if negative { -n } else { n }))
    }
}
