//! A small codec for NumPy `.npy` files.
//!
//! An `.npy` file is the on-disk form of one NumPy array (`np.save` / `np.load`): the magic bytes
//! `\x93NUMPY`, a two-byte format version, a little-endian header length, an ASCII header that is a
//! Python dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`
//! (padded with spaces and a final `\n` so the data starts on a 64-byte boundary), then the raw
//! element bytes. The format is specified in NEP 1 ("A Simple File Format for NumPy Arrays") and
//! documented in `numpy.lib.format`.
//!
//! # Supported subset, and why
//!
//! The pipeline only moves numeric tensors, and it streams them row by row (first axis) as `f32`
//! so a large array never has to fit in memory. Hence:
//!
//! - **Versions** 1.0 (u16 header length), 2.0 and 3.0 (u32 header length; 3.0 has a UTF-8
//!   header). Headers larger than 1 MiB are rejected (NumPy's own default limit is 10 000
//!   characters), so a corrupt length field cannot trigger a huge allocation.
//! - **Dtypes**: `bool`, `int8`..`int64`, `uint8`..`uint64`, `float32`, `float64`, in either byte
//!   order (big-endian data is byte-swapped while reading). `int64`/`uint64`/`float64` values are
//!   rounded to the nearest `f32`.
//! - **Rejected**: object arrays (they are pickles: loading them can run arbitrary code),
//!   structured, complex, string, datetime and float16 dtypes (no meaningful single `f32`
//!   per element), and Fortran-order arrays with more than one non-trivial axis (their rows are
//!   not contiguous, so they cannot be streamed; re-save with `np.ascontiguousarray`).
//! - **Written** files are always version 1.0, C order, little-endian, `float32` or `uint8`:
//!   the form every NumPy since 1.0 reads.
//!
//! Every malformed input (truncated file, garbage header, absurd shape) yields an [`NpyError`];
//! nothing here panics on input data, and allocations are bounded by the bytes actually present.

use std::fmt;
use std::io::{self, Read, Write};

/// The six bytes every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Largest header accepted: generous for any real array, small enough to allocate safely.
const MAX_HEADER_LEN: usize = 1 << 20;
/// The data section starts at a multiple of this many bytes (NumPy's `ARRAY_ALIGN`).
const ALIGN: usize = 64;
/// NumPy 2's `NPY_MAXDIMS`: we refuse to write arrays NumPy could not load.
const MAX_DIMS: usize = 64;
/// Deepest nesting of tuples/lists/dicts the header parser follows (a real header needs 3).
const MAX_NESTING: usize = 32;
/// Bytes read (or written) per I/O call; a multiple of every item size.
const CHUNK_BYTES: usize = 64 * 1024;

/// Element type of an array, as far as this codec supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
}

impl NpyDtype {
    const ALL: [NpyDtype; 11] = [
        NpyDtype::U8,
        NpyDtype::I8,
        NpyDtype::U16,
        NpyDtype::I16,
        NpyDtype::U32,
        NpyDtype::I32,
        NpyDtype::U64,
        NpyDtype::I64,
        NpyDtype::F32,
        NpyDtype::F64,
        NpyDtype::Bool,
    ];

    /// The NumPy name of the dtype (`"uint8"`, `"float32"`, `"bool"`, ...), for messages.
    pub fn name(self) -> &'static str {
        match self {
            NpyDtype::U8 => "uint8",
            NpyDtype::I8 => "int8",
            NpyDtype::U16 => "uint16",
            NpyDtype::I16 => "int16",
            NpyDtype::U32 => "uint32",
            NpyDtype::I32 => "int32",
            NpyDtype::U64 => "uint64",
            NpyDtype::I64 => "int64",
            NpyDtype::F32 => "float32",
            NpyDtype::F64 => "float64",
            NpyDtype::Bool => "bool",
        }
    }

    /// Size of one element in bytes.
    pub fn itemsize(self) -> usize {
        match self {
            NpyDtype::U8 | NpyDtype::I8 | NpyDtype::Bool => 1,
            NpyDtype::U16 | NpyDtype::I16 => 2,
            NpyDtype::U32 | NpyDtype::I32 | NpyDtype::F32 => 4,
            NpyDtype::U64 | NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }

    /// True for the signed and unsigned integer types (not `Bool`).
    pub fn is_integer(self) -> bool {
        !matches!(self, NpyDtype::F32 | NpyDtype::F64 | NpyDtype::Bool)
    }

    /// True for `F32` and `F64`.
    pub fn is_float(self) -> bool {
        matches!(self, NpyDtype::F32 | NpyDtype::F64)
    }

    /// The dtype for a descr type code without byte-order prefix (`"f4"`, `"u1"`, `"b1"`, ...).
    fn from_code(code: &str) -> Option<NpyDtype> {
        Some(match code {
            "u1" => NpyDtype::U8,
            "i1" => NpyDtype::I8,
            "u2" => NpyDtype::U16,
            "i2" => NpyDtype::I16,
            "u4" => NpyDtype::U32,
            "i4" => NpyDtype::I32,
            "u8" => NpyDtype::U64,
            "i8" => NpyDtype::I64,
            "f4" => NpyDtype::F32,
            "f8" => NpyDtype::F64,
            "b1" => NpyDtype::Bool,
            _ => return None,
        })
    }
}

/// Header of an .npy file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: NpyDtype,
    /// Array shape; empty for a 0-d (scalar) array.
    pub shape: Vec<usize>,
    /// Byte offset where the data starts (magic + version + length field + header text).
    pub header_len: usize,
}

/// Why an `.npy` file could not be read or written. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The underlying reader or writer failed.
    #[error("I/O error on .npy data: {0}")]
    Io(#[from] io::Error),
    /// The input does not start with the `\x93NUMPY` magic bytes.
    #[error("not a .npy file: it does not start with the \\x93NUMPY magic bytes (was it saved with np.save?)")]
    NotNpy,
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0); re-save it with np.save")]
    UnsupportedVersion { major: u8, minor: u8 },
    /// The header is truncated, too large, or not the dict NumPy writes.
    #[error("malformed .npy header: {0}")]
    BadHeader(String),
    /// A valid NumPy dtype this codec does not read (the string describes it).
    #[error(
        "unsupported .npy dtype {0}: only bool, int8-int64, uint8-uint64, float32 and float64 are supported; \
         convert first, e.g. np.save(path, arr.astype(np.float32))"
    )]
    UnsupportedDtype(String),
    /// A Fortran-order (column-major) array, whose rows are not contiguous on disk.
    #[error(
        "the .npy array is stored in Fortran (column-major) order; \
         re-save it in C order with np.save(path, np.ascontiguousarray(arr))"
    )]
    FortranOrder,
    /// A 0-d array where rows were requested.
    #[error("expected at least 1 dimension, but the .npy file holds a 0-d (scalar) array; save it with shape (1,)")]
    ZeroDimensional,
    /// The data section is shorter than `shape` × itemsize (bytes).
    #[error("the .npy data is truncated: shape and dtype require {expected} data bytes but the file has only {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// Writing: `data.len()` differs from the product of `shape`.
    #[error("cannot write .npy: shape {shape:?} holds {expected} elements but {actual} were given")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// Writing: a shape NumPy cannot represent (too many dimensions or elements).
    #[error("cannot write .npy: {0}")]
    InvalidShape(String),
}

/// Byte order of multi-byte elements in the data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    const NATIVE: ByteOrder = if cfg!(target_endian = "big") {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
}

/// Everything the reader needs from a header, including what [`NpyHeader`] does not expose.
#[derive(Debug)]
struct ParsedHeader {
    header: NpyHeader,
    order: ByteOrder,
    /// Total size of the data section (already checked not to overflow).
    data_bytes: usize,
}

/// Reads only the header (cheap; for shape/dtype checks before loading).
///
/// Leaves `r` positioned at the first data byte. A 0-d array is accepted here (shape `[]`).
pub fn read_header(r: &mut impl Read) -> Result<NpyHeader, NpyError> {
    read_header_full(r).map(|parsed| parsed.header)
}

fn read_header_full(r: &mut impl Read) -> Result<ParsedHeader, NpyError> {
    let mut preamble = [0u8; 8];
    read_exact_or(r, &mut preamble, || NpyError::NotNpy)?;
    if &preamble[..6] != MAGIC {
        return Err(NpyError::NotNpy);
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let (len_field, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) | (3, 0) => (4, major == 3),
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let mut len_bytes = [0u8; 4];
    read_exact_or(r, &mut len_bytes[..len_field], || {
        NpyError::BadHeader("the file ends before the header length field".into())
    })?;
    let text_len = u32::from_le_bytes(len_bytes) as usize; // the unused high bytes stay 0
    if text_len > MAX_HEADER_LEN {
        return Err(NpyError::BadHeader(format!(
            "the header claims to be {text_len} bytes long; more than 1 MiB is refused (corrupt file?)"
        )));
    }
    let mut raw = vec![0u8; text_len];
    read_exact_or(r, &mut raw, || {
        NpyError::BadHeader(format!(
            "the file ends inside the {text_len}-byte header (truncated file?)"
        ))
    })?;
    let text: String = if utf8 {
        String::from_utf8(raw).map_err(|_| NpyError::BadHeader("a version 3.0 header must be UTF-8".into()))?
    } else {
        raw.iter().map(|&b| char::from(b)).collect() // latin-1, as NumPy decodes 1.0/2.0 headers
    };
    let mut parsed = parse_header_text(&text, !utf8)?;
    parsed.header.header_len = 6 + 2 + len_field + text_len;
    Ok(parsed)
}

/// `read_exact`, but a premature end of input becomes the error `on_eof` builds.
fn read_exact_or(r: &mut impl Read, buf: &mut [u8], on_eof: impl FnOnce() -> NpyError) -> Result<(), NpyError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(on_eof()),
        Err(e) => Err(e.into()),
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Interprets the header dict. `py2_longs` allows Python 2's `3L` integers (1.0/2.0 files only,
/// as NumPy does). `header_len` is left 0 for the caller to fill in.
fn parse_header_text(text: &str, py2_longs: bool) -> Result<ParsedHeader, NpyError> {
    let bad = |msg: String| NpyError::BadHeader(msg);
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        py2_longs,
    };
    let value = parser.value(0).map_err(bad)?;
    parser.skip_ws();
    if parser.pos < parser.chars.len() {
        return Err(bad(format!(
            "unexpected text after the header dict at character {}",
            parser.pos
        )));
    }
    let Value::Dict(entries) = value else {
        return Err(bad(format!("the header is not a dict: {value}")));
    };

    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        // Like a Python dict literal, a repeated key keeps its last value.
        match key.as_str() {
            "descr" => descr = Some(value),
            "fortran_order" => fortran = Some(value),
            "shape" => shape = Some(value),
            _ => {
                return Err(bad(format!(
                    "unexpected key {}; the header must have exactly 'descr', 'fortran_order' and 'shape'",
                    Value::Str(key)
                )));
            }
        }
    }
    let missing = |key: &str| bad(format!("the header has no '{key}' key"));
    let (descr, fortran, shape) = (
        descr.ok_or_else(|| missing("descr"))?,
        fortran.ok_or_else(|| missing("fortran_order"))?,
        shape.ok_or_else(|| missing("shape"))?,
    );

    let shape = match &shape {
        Value::Tuple(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>(),
        _ => None,
    }
    .ok_or_else(|| bad(format!("'shape' must be a tuple of non-negative integers, got {shape}")))?;
    let Value::Bool(fortran) = fortran else {
        return Err(bad(format!("'fortran_order' must be True or False, got {fortran}")));
    };
    let (dtype, order) = match &descr {
        Value::Str(s) => parse_descr(s)?,
        Value::List(_) => return Err(NpyError::UnsupportedDtype(format!("{descr} (a structured dtype)"))),
        _ => {
            return Err(bad(format!(
                "'descr' must be a dtype string such as '<f4', got {descr}"
            )));
        }
    };

    // Multiply the non-zero dimensions so that every partial product (e.g. a row length) is
    // known to fit too, even when another dimension is 0.
    let too_big = || bad(format!("shape {} is too large to address", ShapeRepr(&shape)));
    let nonzero_elems = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let nonzero_bytes = nonzero_elems
        .and_then(|n| n.checked_mul(dtype.itemsize()))
        .ok_or_else(too_big)?;
    let data_bytes = if shape.contains(&0) { 0 } else { nonzero_bytes };

    // Fortran and C order lay out the same bytes when at most one axis is longer than 1.
    if fortran && data_bytes != 0 && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(NpyError::FortranOrder);
    }
    Ok(ParsedHeader {
        header: NpyHeader {
            dtype,
            shape,
            header_len: 0,
        },
        order,
        data_bytes,
    })
}

/// Parses a dtype string such as `<f4`, `|u1`, `>i8` or `|b1` (a bare NumPy name such as
/// `float32` is accepted too, meaning native byte order).
fn parse_descr(descr: &str) -> Result<(NpyDtype, ByteOrder), NpyError> {
    let (order, code) = match descr.chars().next() {
        Some('<') => (Some(ByteOrder::Little), &descr[1..]),
        Some('>') => (Some(ByteOrder::Big), &descr[1..]),
        Some('=') => (Some(ByteOrder::NATIVE), &descr[1..]),
        Some('|') => (None, &descr[1..]),
        _ => (Some(ByteOrder::NATIVE), descr),
    };
    let dtype = NpyDtype::from_code(code).or_else(|| NpyDtype::ALL.into_iter().find(|d| d.name() == descr));
    match (dtype, order) {
        (Some(dtype), Some(order)) => Ok((dtype, order)),
        // '|' means "byte order not applicable", which is only true of 1-byte types.
        (Some(dtype), None) if dtype.itemsize() == 1 => Ok((dtype, ByteOrder::Little)),
        (Some(_), None) => Err(NpyError::UnsupportedDtype(format!(
            "{} (a multi-byte type needs a '<' or '>' byte order)",
            Value::Str(descr.into())
        ))),
        _ => Err(NpyError::UnsupportedDtype(format!(
            "{} ({})",
            Value::Str(descr.into()),
            describe_code(code)
        ))),
    }
}

/// A short human description of an unsupported type code, for error messages.
fn describe_code(code: &str) -> &'static str {
    match code.chars().next() {
        Some('O') => "Python objects, stored as a pickle",
        Some('c') => "complex",
        Some('U') => "unicode string",
        Some('S' | 'a') => "byte string",
        Some('V') => "raw bytes / void",
        Some('M') => "datetime64",
        Some('m') => "timedelta64",
        Some('f') if code == "f2" => "float16",
        Some('f') => "float of unsupported size",
        Some('i' | 'u' | 'b') => "integer or bool of unsupported size or byte order",
        _ => "unknown type code",
    }
}

/// A Python literal as found in an `.npy` header.
#[derive(Debug, Clone, PartialEq)]
enum Value {
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

/// Streams an .npy file: header, then rows (first axis) in chunks converted to f32, so a big
/// array is never loaded whole. `row_len` = product of shape[1..] (1 for a 1-D array).
///
/// The reader does its own chunking (64 KiB per `read` call), so wrapping a `File` in a
/// `BufReader` is not needed.
pub struct NpyReader<R> {
    inner: R,
    header: NpyHeader,
    order: ByteOrder,
    data_bytes: usize,
    rows: usize,
    row_len: usize,
    rows_read: usize,
    /// Data bytes consumed so far (for the `SizeMismatch` message).
    consumed: usize,
    buf: Vec<u8>,
}

impl<R: Read> NpyReader<R> {
    /// Reads and validates the header; fails with [`NpyError::ZeroDimensional`] for a 0-d array.
    pub fn new(mut r: R) -> Result<Self, NpyError> {
        let ParsedHeader {
            header,
            order,
            data_bytes,
        } = read_header_full(&mut r)?;
        let Some((&rows, rest)) = header.shape.split_first() else {
            return Err(NpyError::ZeroDimensional);
        };
        // Cannot overflow: the header parser checked the product of all non-zero dimensions.
        let row_len = rest.iter().product();
        Ok(NpyReader {
            inner: r,
            header,
            order,
            data_bytes,
            rows,
            row_len,
            rows_read: 0,
            consumed: 0,
            buf: Vec::new(),
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// Number of rows: the length of the first axis.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row: the product of the remaining axes (1 for a 1-D array).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Reads up to `max_rows` next rows, values converted to f32 (bool -> 0/1), appended to `out`; returns rows read (0 at end).
    ///
    /// Also returns 0 when `max_rows` is 0. On error nothing is appended to `out`; a
    /// truncated file yields [`NpyError::SizeMismatch`].
    pub fn read_rows_f32(&mut self, max_rows: usize, out: &mut Vec<f32>) -> Result<usize, NpyError> {
        let rows = max_rows.min(self.rows - self.rows_read);
        if rows == 0 {
            return Ok(0);
        }
        let start_len = out.len();
        match self.read_values(rows, out) {
            Ok(()) => {
                self.rows_read += rows;
                Ok(rows)
            }
            Err(e) => {
                out.truncate(start_len);
                Err(e)
            }
        }
    }

    fn read_values(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<(), NpyError> {
        let itemsize = self.header.dtype.itemsize();
        // Both fit: they are at most the data size, which the header parser checked.
        let mut remaining = rows * self.row_len * itemsize;
        // Reserve no more than one chunk ahead, so a lying header cannot make us allocate much.
        out.reserve(remaining.min(CHUNK_BYTES) / itemsize);
        while remaining > 0 {
            let want = remaining.min(CHUNK_BYTES); // a multiple of itemsize, as both terms are
            self.buf.resize(want, 0);
            let got = read_full(&mut self.inner, &mut self.buf[..want])?;
            self.consumed += got;
            if got < want {
                return Err(NpyError::SizeMismatch {
                    expected: self.data_bytes as u64,
                    actual: self.consumed as u64,
                });
            }
            extend_f32(self.header.dtype, self.order, &self.buf[..want], out);
            remaining -= want;
        }
        Ok(())
    }
}

/// Converts whole elements of `bytes` to `f32` and appends them to `out`.
fn extend_f32(dtype: NpyDtype, order: ByteOrder, bytes: &[u8], out: &mut Vec<f32>) {
    macro_rules! convert {
        ($t:ty, $to_f32:expr) => {{
            const N: usize = std::mem::size_of::<$t>();
            let bytes_of = |chunk: &[u8]| {
                let mut a = [0u8; N];
                a.copy_from_slice(chunk);
                a
            };
            let chunks = bytes.chunks_exact(N);
            match order {
                ByteOrder::Little => out.extend(chunks.map(|c| $to_f32(<$t>::from_le_bytes(bytes_of(c))))),
                ByteOrder::Big => out.extend(chunks.map(|c| $to_f32(<$t>::from_be_bytes(bytes_of(c))))),
            }
        }};
    }
    match dtype {
        NpyDtype::U8 => out.extend(bytes.iter().map(|&b| f32::from(b))),
        NpyDtype::I8 => out.extend(bytes.iter().map(|&b| f32::from(b as i8))),
        NpyDtype::Bool => out.extend(bytes.iter().map(|&b| if b != 0 { 1.0 } else { 0.0 })),
        NpyDtype::U16 => convert!(u16, f32::from),
        NpyDtype::I16 => convert!(i16, f32::from),
        NpyDtype::U32 => convert!(u32, |v| v as f32),
        NpyDtype::I32 => convert!(i32, |v| v as f32),
        NpyDtype::U64 => convert!(u64, |v| v as f32),
        NpyDtype::I64 => convert!(i64, |v| v as f32),
        NpyDtype::F32 => convert!(f32, |v| v),
        NpyDtype::F64 => convert!(f64, |v| v as f32),
    }
}

/// Renders a shape as a Python tuple: `()`, `(5,)`, `(2, 3, 4)`.
struct ShapeRepr<'a>(&'a [usize]);

impl fmt::Display for ShapeRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("()"),
            [n] => write!(f, "({n},)"),
            [first, rest @ ..] => {
                write!(f, "({first}")?;
                for n in rest {
                    write!(f, ", {n}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Checks `shape` against `len` elements and writes the version 1.0 header for `descr`.
fn write_header(w: &mut impl Write, descr: &str, shape: &[usize], len: usize) -> Result<(), NpyError> {
    if shape.len() > MAX_DIMS {
        return Err(NpyError::InvalidShape(format!(
            "{} dimensions given, but NumPy supports at most {MAX_DIMS}",
            shape.len()
        )));
    }
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            NpyError::InvalidShape(format!(
                "shape {} has more elements than can be addressed",
                ShapeRepr(shape)
            ))
        })?;
    if expected != len {
        return Err(NpyError::ShapeMismatch {
            shape: shape.to_vec(),
            expected,
            actual: len,
        });
    }
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        ShapeRepr(shape)
    );
    // magic + version + u16 length + dict + '\n', padded with spaces up to a multiple of ALIGN.
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let padding = (ALIGN - unpadded % ALIGN) % ALIGN;
    // At most 64 dims of at most 20 digits: always far below u16::MAX.
    let text_len = u16::try_from(dict.len() + padding + 1)
        .map_err(|_| NpyError::InvalidShape("the header does not fit a version 1.0 file".into()))?;
    let mut header = Vec::with_capacity(unpadded + padding);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&[1, 0]);
    header.extend_from_slice(&text_len.to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(header.len() + padding, b' ');
    header.push(b'\n');
    w.write_all(&header)?;
    Ok(())
}

/// Writes a C-order little-endian .npy (version 1.0, header padded to a multiple of 64 bytes per the spec) of f32 or u8 data.
///
/// `data` is in C (row-major) order and must hold exactly the product of `shape` elements
/// (1 for the 0-d shape `[]`). Wrap a `File` in a `BufWriter` only if you write many small
/// arrays; data is written in 64 KiB chunks.
pub fn write_f32(w: &mut impl Write, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    write_header(w, "<f4", shape, data.len())?;
    let mut buf = Vec::with_capacity(CHUNK_BYTES.min(data.len() * 4));
    for chunk in data.chunks(CHUNK_BYTES / 4) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Writes a C-order .npy (version 1.0, dtype `|u1`) of u8 data; see [`write_f32`].
pub fn write_u8(w: &mut impl Write, shape: &[usize], data: &[u8]) -> Result<(), NpyError> {
    write_header(w, "|u1", shape, data.len())?;
    w.write_all(data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// An `.npy` file with the given version and raw header dict text (padded like NumPy does).
    fn npy_file(version: (u8, u8), dict: &str, data: &[u8]) -> Vec<u8> {
        let len_field = if version.0 == 1 { 2 } else { 4 };
        let unpadded = 8 + len_field + dict.len() + 1;
        let text_len = dict.len() + (ALIGN - unpadded % ALIGN) % ALIGN + 1;
        let mut out = MAGIC.to_vec();
        out.extend([version.0, version.1]);
        out.extend(&(text_len as u32).to_le_bytes()[..len_field]);
        out.extend(dict.as_bytes());
        out.resize(8 + len_field + text_len - 1, b' ');
        out.push(b'\n');
        out.extend(data);
        out
    }

    fn header_of(dict: &str) -> Result<NpyHeader, NpyError> {
        read_header(&mut Cursor::new(npy_file((1, 0), dict, &[])))
    }

    fn dict_with(descr: &str, shape: &str) -> String {
        format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}")
    }

    fn read_all(bytes: &[u8], rows_per_call: usize) -> Result<(NpyHeader, Vec<f32>), NpyError> {
        let mut reader = NpyReader::new(Cursor::new(bytes))?;
        let mut out = Vec::new();
        while reader.read_rows_f32(rows_per_call, &mut out)? > 0 {}
        Ok((reader.header().clone(), out))
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn parses_the_header_numpy_writes() {
        let h = header_of("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }").unwrap();
        assert_eq!(
            h,
            NpyHeader {
                dtype: NpyDtype::F32,
                shape: vec![3, 4],
                header_len: 128
            }
        );
    }

    #[test]
    fn header_keys_in_any_order_with_odd_spacing_and_quotes() {
        for dict in [
            "{'shape': (3, 4), 'descr': '<f4', 'fortran_order': False}",
            "{ \"fortran_order\" :False ,\n\t'shape':(3,4,),'descr':\"<f4\",}",
            "{'descr':'<f4','fortran_order':False,'shape':(  3 ,\n 4  )}",
        ] {
            let h = header_of(dict).unwrap_or_else(|e| panic!("{dict}: {e}"));
            assert_eq!((h.dtype, h.shape), (NpyDtype::F32, vec![3, 4]), "{dict}");
        }
    }

    #[test]
    fn header_shapes() {
        for (shape, want) in [
            ("()", vec![]),
            ("( )", vec![]),
            ("(5,)", vec![5]),
            ("(2, 3, 4)", vec![2, 3, 4]),
            ("(2,3,4,)", vec![2, 3, 4]),
            ("(0, 7)", vec![0, 7]),
            ("(3L, 4L)", vec![3, 4]), // Python 2 era files
            ("(0, 4294967296, 2)", vec![0, 1 << 32, 2]),
        ] {
            let h = header_of(&dict_with("'<f4'", shape)).unwrap_or_else(|e| panic!("{shape}: {e}"));
            assert_eq!(h.shape, want, "{shape}");
        }
    }

    #[test]
    fn header_rejects_bad_shapes() {
        for shape in [
            "(5)", // an int in Python, not a tuple
            "5",
            "[2, 3]",
            "(-1,)",
            "(2.5,)",
            "(2, 'a')",
            "(True,)",
            "(1,,)",
            "(,)",
            "(99999999999999999999999999999999999999999999,)",
            "(4294967296, 4294967296)", // element count overflows on 64-bit
            "(4611686018427387904, 2)", // byte count overflows
            "(0, 4294967296, 4294967296, 4294967296, 4294967296)", // row length overflows
            "(3, 4",
        ] {
            match header_of(&dict_with("'<f4'", shape)) {
                Err(NpyError::BadHeader(msg)) => assert!(!msg.contains('\n'), "{msg}"),
                other => panic!("{shape}: expected BadHeader, got {other:?}"),
            }
        }
    }

    #[test]
    fn python2_longs_only_in_old_versions() {
        let dict = dict_with("'<f4'", "(3L,)");
        let err = read_header(&mut Cursor::new(npy_file((3, 0), &dict, &[]))).unwrap_err();
        assert!(matches!(err, NpyError::BadHeader(_)), "{err}");
    }

    #[test]
    fn descr_forms() {
        use NpyDtype::*;
        for (descr, dtype, order) in [
            ("<f4", F32, ByteOrder::Little),
            (">f8", F64, ByteOrder::Big),
            ("|u1", U8, ByteOrder::Little),
            ("|i1", I8, ByteOrder::Little),
            ("<u2", U16, ByteOrder::Little),
            (">i2", I16, ByteOrder::Big),
            ("<u4", U32, ByteOrder::Little),
            ("<i4", I32, ByteOrder::Little),
            ("<u8", U64, ByteOrder::Little),
            ("<i8", I64, ByteOrder::Little),
            ("|b1", Bool, ByteOrder::Little),
            ("=i4", I32, ByteOrder::NATIVE),
            ("float32", F32, ByteOrder::NATIVE),
        ] {
            assert_eq!(parse_descr(descr).unwrap(), (dtype, order), "{descr}");
        }
    }

    #[test]
    fn unsupported_dtypes() {
        for (descr, hint) in [
            ("'<c8'", "complex"),
            ("'|O'", "pickle"),
            ("'<U3'", "unicode"),
            ("'|S2'", "byte string"),
            ("'|V4'", "void"),
            ("'<M8[ns]'", "datetime64"),
            ("'<f2'", "float16"),
            ("'<f16'", "float"),
            ("'|f4'", "byte order"),
            ("''", "unknown"),
            ("[('a', '<f4'), ('b', '<i4')]", "structured"),
        ] {
            match header_of(&dict_with(descr, "(2,)")) {
                Err(e @ NpyError::UnsupportedDtype(_)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(hint) && msg.contains("astype"), "{descr}: {msg}");
                }
                other => panic!("{descr}: expected UnsupportedDtype, got {other:?}"),
            }
        }
    }

    #[test]
    fn fortran_order() {
        let fortran = |shape: &str| header_of(&format!("{{'descr': '<f4', 'fortran_order': True, 'shape': {shape}}}"));
        let err = fortran("(2, 3)").unwrap_err();
        assert!(matches!(err, NpyError::FortranOrder));
        assert!(err.to_string().contains("np.ascontiguousarray"), "{err}");
        // Same bytes as C order when at most one axis is longer than 1, or there is no data.
        for shape in ["(5,)", "(1, 5, 1)", "(0, 3)", "()"] {
            fortran(shape).unwrap_or_else(|e| panic!("{shape}: {e}"));
        }
    }

    #[test]
    fn header_rejects_garbage_dicts() {
        let deep = format!("{}{}", "(".repeat(100_000), ")".repeat(100_000));
        let long_key = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': (1,), '{}': 1}}",
            "k".repeat(500)
        );
        for dict in [
            "",
            "   ",
            "[1, 2]",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'shape': (1,)}",
            "{'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 0}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': None, 'shape': (1,)}",
            "{'descr': 4, 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} trailing",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}}",
            "{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}",
            "{1: '<f4'}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'a\\",
            "\u{e9}",
            deep.as_str(),
            long_key.as_str(),
        ] {
            match header_of(dict) {
                Err(NpyError::BadHeader(msg)) => assert!(!msg.contains('\n'), "{msg}"),
                other => panic!("{dict:.80}: expected BadHeader, got {other:?}"),
            }
        }
    }

    #[test]
    fn repeated_key_keeps_the_last_value_like_python() {
        let h = header_of("{'descr': '<i4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}").unwrap();
        assert_eq!(h.dtype, NpyDtype::F32);
    }

    #[test]
    fn preamble_errors() {
        let valid = npy_file((1, 0), &dict_with("'<f4'", "(1,)"), &[0; 4]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "NotNpy"),
            (b"hello world, not npy".to_vec(), "NotNpy"),
            (MAGIC.to_vec(), "NotNpy"),
            (valid[..9].to_vec(), "BadHeader"),
            (valid[..40].to_vec(), "BadHeader"),
            ([&MAGIC[..], &[4, 0, 10, 0]].concat(), "UnsupportedVersion"),
            ([&MAGIC[..], &[1, 1, 10, 0]].concat(), "UnsupportedVersion"),
            // A 2 GiB header length must be refused before anything is allocated.
            ([&MAGIC[..], &[2, 0, 0, 0, 0, 128]].concat(), "BadHeader"),
            ([&MAGIC[..], &[3, 0, 0xff, 0xff, 0xff, 0xff]].concat(), "BadHeader"),
        ];
        for (bytes, want) in cases {
            let err = read_header(&mut Cursor::new(&bytes)).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{bytes:?}: {err:?}");
        }
    }

    #[test]
    fn versions_2_and_3() {
        let dict = dict_with("'<f4'", "(2,)");
        let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for version in [(2, 0), (3, 0)] {
            let bytes = npy_file(version, &dict, &data);
            let (header, values) = read_all(&bytes, 10).unwrap();
            assert_eq!(header.header_len, 128); // 12-byte preamble + 58-byte dict + '\n', padded
            assert_eq!(values, [1.5, -2.0]);
        }
        // 3.0 headers are UTF-8 (non-ASCII only shows up in structured field names, which are
        // rejected anyway); invalid UTF-8 is an error, not a panic.
        let utf8 = "{'descr': [('\u{e9}t\u{e9}', '<f4')], 'fortran_order': False, 'shape': (2,)}";
        let err = read_header(&mut Cursor::new(npy_file((3, 0), utf8, &[]))).unwrap_err();
        assert!(err.to_string().contains("'\u{e9}t\u{e9}'"), "{err}");
        let mut bad = npy_file((3, 0), &dict, &[]);
        bad[13] = 0xff;
        assert!(matches!(
            read_header(&mut Cursor::new(bad)),
            Err(NpyError::BadHeader(_))
        ));
    }

    #[test]
    fn converts_every_dtype_and_byte_order() {
        fn check(descr: &str, data: Vec<u8>, want: &[f32]) {
            let bytes = npy_file(
                (1, 0),
                &dict_with(&format!("'{descr}'"), &format!("({},)", want.len())),
                &data,
            );
            let (_, got) = read_all(&bytes, 2).unwrap_or_else(|e| panic!("{descr}: {e}"));
            assert_eq!(bits(&got), bits(want), "{descr}");
        }
        check("|u1", vec![0, 7, 255], &[0.0, 7.0, 255.0]);
        check("|i1", vec![0, 7, 255, 128], &[0.0, 7.0, -1.0, -128.0]);
        check("|b1", vec![0, 1, 2], &[0.0, 1.0, 1.0]);
        check(
            "<u2",
            [1u16, 65535].iter().flat_map(|v| v.to_le_bytes()).collect(),
            &[1.0, 65535.0],
        );
        check(
            ">i2",
            [-3i16, 300].iter().flat_map(|v| v.to_be_bytes()).collect(),
            &[-3.0, 300.0],
        );
        check(
            ">u4",
            [7u32, 1 << 31].iter().flat_map(|v| v.to_be_bytes()).collect(),
            &[7.0, 2147483648.0],
        );
        check(
            "<i4",
            [-7i32, i32::MIN].iter().flat_map(|v| v.to_le_bytes()).collect(),
            &[-7.0, -2147483648.0],
        );
        check(
            "<u8",
            [u64::MAX, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            &[u64::MAX as f32, 3.0],
        );
        check(
            ">i8",
            [-5i64, 1 << 40].iter().flat_map(|v| v.to_be_bytes()).collect(),
            &[-5.0, (1u64 << 40) as f32],
        );
        let f32s = [f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE, 1e30];
        check(">f4", f32s.iter().flat_map(|v| v.to_be_bytes()).collect(), &f32s);
        check(
            "<f8",
            [0.1f64, -1e300].iter().flat_map(|v| v.to_le_bytes()).collect(),
            &[0.1, f32::NEG_INFINITY],
        );
    }

    #[test]
    fn truncated_data_is_a_size_mismatch_and_leaves_out_untouched() {
        let data: Vec<u8> = (0..10u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let bytes = npy_file((1, 0), &dict_with("'<f4'", "(3, 4)"), &data); // needs 48 bytes, has 40
        let mut reader = NpyReader::new(Cursor::new(&bytes)).unwrap();
        let mut out = vec![42.0];
        assert_eq!(reader.read_rows_f32(2, &mut out).unwrap(), 2);
        assert_eq!(out.len(), 9);
        match reader.read_rows_f32(5, &mut out) {
            Err(
                e @ NpyError::SizeMismatch {
                    expected: 48,
                    actual: 40,
                },
            ) => {
                assert!(e.to_string().contains("truncated"), "{e}")
            }
            other => panic!("expected SizeMismatch, got {other:?}"),
        }
        assert_eq!(out.len(), 9);
    }

    #[test]
    fn zero_dimensional_arrays() {
        let mut file = Vec::new();
        write_f32(&mut file, &[], &[1.5]).unwrap();
        assert_eq!(read_header(&mut Cursor::new(&file)).unwrap().shape, Vec::<usize>::new());
        let err = NpyReader::new(Cursor::new(&file)).err().unwrap();
        assert!(matches!(err, NpyError::ZeroDimensional));
        assert!(err.to_string().contains("expected at least 1 dimension"), "{err}");
    }

    #[test]
    fn round_trip_f32() {
        let specials = [
            f32::NAN,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::MAX,
        ];
        for shape in [
            vec![2, 3, 4],
            vec![7],
            vec![1, 1, 1, 1],
            vec![0, 3],
            vec![3, 0],
            vec![300, 100],
        ] {
            let n: usize = shape.iter().product();
            let mut data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            for (slot, special) in data.iter_mut().zip(specials) {
                *slot = special;
            }
            let mut file = Vec::new();
            write_f32(&mut file, &shape, &data).unwrap();
            let header = read_header(&mut Cursor::new(&file)).unwrap();
            assert_eq!((header.dtype, &header.shape), (NpyDtype::F32, &shape));
            assert_eq!(header.header_len % 64, 0);
            assert_eq!(file[header.header_len - 1], b'\n');
            assert_eq!(file.len(), header.header_len + 4 * n);
            for rows_per_call in [1, 2, 3, 1000] {
                let mut reader = NpyReader::new(Cursor::new(&file)).unwrap();
                assert_eq!(
                    (reader.rows(), reader.row_len()),
                    (shape[0], shape[1..].iter().product())
                );
                let mut out = Vec::new();
                let mut calls = 0;
                while reader.read_rows_f32(rows_per_call, &mut out).unwrap() > 0 {
                    calls += 1;
                }
                assert_eq!(calls, shape[0].div_ceil(rows_per_call), "{shape:?}");
                assert_eq!(bits(&out), bits(&data), "{shape:?} by {rows_per_call}");
                assert_eq!(reader.read_rows_f32(rows_per_call, &mut out).unwrap(), 0);
            }
        }
    }

    #[test]
    fn round_trip_u8_and_exact_header_bytes() {
        let data: Vec<u8> = (0..60u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut file = Vec::new();
        write_u8(&mut file, &[5, 12], &data).unwrap();
        let dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (5, 12), }";
        assert_eq!(file, npy_file((1, 0), dict, &data));
        let (header, values) = read_all(&file, 2).unwrap();
        assert_eq!(
            (header.dtype, header.shape, header.header_len),
            (NpyDtype::U8, vec![5, 12], 128)
        );
        assert_eq!(values, data.iter().map(|&b| f32::from(b)).collect::<Vec<_>>());
    }

    #[test]
    fn max_rows_zero_reads_nothing() {
        let mut file = Vec::new();
        write_u8(&mut file, &[2], &[1, 2]).unwrap();
        let mut reader = NpyReader::new(Cursor::new(&file)).unwrap();
        let mut out = Vec::new();
        assert_eq!(reader.read_rows_f32(0, &mut out).unwrap(), 0);
        assert_eq!(reader.read_rows_f32(usize::MAX, &mut out).unwrap(), 2);
        assert_eq!(out, [1.0, 2.0]);
    }

    #[test]
    fn writer_rejects_bad_shapes() {
        let mut sink = Vec::new();
        let err = write_f32(&mut sink, &[2, 3], &[0.0; 5]).unwrap_err();
        assert!(
            matches!(
                err,
                NpyError::ShapeMismatch {
                    expected: 6,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            write_u8(&mut sink, &[1; 65], &[0]),
            Err(NpyError::InvalidShape(_))
        ));
        assert!(matches!(
            write_u8(&mut sink, &[usize::MAX, 2], &[]),
            Err(NpyError::InvalidShape(_))
        ));
        assert!(sink.is_empty(), "nothing may be written for an invalid call");
        write_u8(&mut sink, &[1; 64], &[9]).unwrap();
        assert_eq!(read_header(&mut Cursor::new(&sink)).unwrap().shape, vec![1; 64]);
    }

    #[test]
    fn error_messages_are_single_lines() {
        let errors = [
            NpyError::Io(io::Error::other("disk on fire")),
            NpyError::NotNpy,
            NpyError::UnsupportedVersion { major: 9, minor: 0 },
            NpyError::BadHeader("x".into()),
            NpyError::UnsupportedDtype("'<c8' (complex)".into()),
            NpyError::FortranOrder,
            NpyError::ZeroDimensional,
            NpyError::SizeMismatch {
                expected: 48,
                actual: 40,
            },
            NpyError::ShapeMismatch {
                shape: vec![2, 3],
                expected: 6,
                actual: 5,
            },
            NpyError::InvalidShape("x".into()),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && msg.len() < 200, "{msg}");
        }
    }

    /// Every truncation and many random corruptions of a valid file: errors, never panics.
    #[test]
    fn malformed_files_never_panic() {
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let mut valid = Vec::new();
        write_f32(&mut valid, &[2, 3, 4], &data).unwrap();
        for cut in 0..valid.len() {
            assert!(read_all(&valid[..cut], 1).is_err(), "a {cut}-byte prefix was accepted");
        }
        let mut state = 0x2545_f491_4f6c_dd1du64; // xorshift64: deterministic "fuzzing"
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let interesting = b"(){}[]',:-0123456789L <>|fiub\n\x00\xff";
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % 80) as usize; // mostly the preamble and header
                bytes[at] = match next() % 3 {
                    0 => next() as u8,
                    _ => interesting[(next() % interesting.len() as u64) as usize],
                };
            }
            bytes.truncate(valid.len() - (next() % 8) as usize * (next() % 2) as usize);
            let _ = read_all(&bytes, 1 + (next() % 3) as usize);
        }
    }

    // ---- Interop with real NumPy (requires python3 with numpy; fails, never skips, without) ----

    fn python_script(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name)
    }

    /// Runs `python3 args...` and returns stdout; panics with a clear message on any failure.
    fn run_python(args: &[&std::ffi::OsStr]) -> String {
        let output = Command::new("python3")
            .args(args)
            .output()
            .unwrap_or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    panic!("python3 is not on PATH; the NumPy interop tests need python3 with numpy installed")
                }
                _ => panic!("cannot run python3 {args:?}: {e}"),
            });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "python3 {args:?} failed ({}):\n{stderr}",
            output.status
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn make_fixtures() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        run_python(&[
            python_script("make_npy_fixtures.py").as_os_str(),
            dir.path().as_os_str(),
        ]);
        dir
    }

    #[test]
    fn numpy_fixtures_read_back() {
        use NpyDtype::*;
        let dir = make_fixtures();
        let arange = |n: usize, f: &dyn Fn(f64) -> f32| (0..n).map(|i| f(i as f64)).collect::<Vec<f32>>();
        let mut cases: Vec<(String, NpyDtype, Vec<usize>, Vec<f32>)> = vec![
            (
                "f32_4d".into(),
                F32,
                vec![4, 2, 3, 3],
                arange(72, &|i| (i * 0.5 - 3.0) as f32),
            ),
            (
                "u8_5x12".into(),
                U8,
                vec![5, 12],
                arange(60, &|i| (i * 7.0 % 256.0) as f32),
            ),
            (
                "f64_3x4".into(),
                F64,
                vec![3, 4],
                arange(12, &|i| (i / 8.0 - 0.75) as f32),
            ),
            (
                "i64_2x5".into(),
                I64,
                vec![2, 5],
                arange(10, &|i| ((i as i64 - 5) * 1_000_000_000) as f32),
            ),
            ("bool_3".into(), Bool, vec![3], vec![1.0, 0.0, 1.0]),
            ("f32_be_2x3".into(), F32, vec![2, 3], arange(6, &|i| (i + 0.25) as f32)),
            ("f32_v2_3x2".into(), F32, vec![3, 2], arange(6, &|i| (i - 1.0) as f32)),
            ("f32_v3_3x2".into(), F32, vec![3, 2], arange(6, &|i| (i - 1.0) as f32)),
            (
                "f32_big_300x100".into(),
                F32,
                vec![300, 100],
                arange(30_000, &|i| i as f32),
            ),
            ("f32_empty_0x3".into(), F32, vec![0, 3], vec![]),
        ];
        for (tag, dtype) in [
            ("i1", I8),
            ("u2le", U16),
            ("i2be", I16),
            ("u4le", U32),
            ("i4le", I32),
            ("u4be", U32),
            ("u8le", U64),
        ]
        .into_iter()
        .chain([("i8be", I64), ("f8be", F64)])
        {
            let offset = if matches!(dtype, U16 | U32 | U64) { 3.0 } else { -30.0 };
            cases.push((
                format!("dt_{tag}"),
                dtype,
                vec![6],
                arange(6, &|i| (11.0 * i + offset) as f32),
            ));
        }
        for (name, dtype, shape, want) in cases {
            let path = dir.path().join(format!("{name}.npy"));
            let bytes = std::fs::read(&path).unwrap();
            let header = read_header(&mut Cursor::new(&bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((header.dtype, &header.shape), (dtype, &shape), "{name}");
            assert_eq!(header.header_len % 64, 0, "{name}");
            let mut reader = NpyReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            let mut got = Vec::new();
            while reader
                .read_rows_f32(3, &mut got)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                > 0
            {}
            assert_eq!(bits(&got), bits(&want), "{name}");
        }

        let open = |name: &str| std::fs::File::open(dir.path().join(format!("{name}.npy"))).unwrap();
        assert!(matches!(
            NpyReader::new(open("f32_scalar")),
            Err(NpyError::ZeroDimensional)
        ));
        assert!(matches!(
            NpyReader::new(open("fortran_2x3")),
            Err(NpyError::FortranOrder)
        ));
        for name in ["object_3", "complex64_3", "structured_2", "float16_3", "unicode_2"] {
            match read_header(&mut open(name)) {
                Err(NpyError::UnsupportedDtype(what)) => eprintln!("{name}: rejected {what}"),
                other => panic!("{name}: expected UnsupportedDtype, got {other:?}"),
            }
        }
    }

    #[test]
    fn numpy_reads_files_written_by_rust() {
        let dir = make_fixtures();
        let f32_data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let u8_data: Vec<u8> = (0..60u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut special = vec![f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE, f32::MAX, 1e-45];
        special.extend((0..20_000).map(|i| (i as f32).sqrt())); // 80 KB: several write chunks
        let write = |name: &str, f: &dyn Fn(&mut std::fs::File) -> Result<(), NpyError>| {
            let path = dir.path().join(name);
            f(&mut std::fs::File::create(&path).unwrap()).unwrap();
            path
        };
        let json = |dtype: &str, shape: &[usize], bits: Vec<u32>| {
            let list = |v: Vec<String>| v.join(",");
            format!(
                "{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"bits\":[{}]}}",
                list(shape.iter().map(|d| d.to_string()).collect()),
                list(bits.iter().map(|b| b.to_string()).collect())
            )
        };
        let checks = [
            (
                write("rust_f32.npy", &|w| write_f32(w, &[2, 3, 4], &f32_data)),
                json("float32", &[2, 3, 4], bits(&f32_data)),
            ),
            (
                write("rust_u8.npy", &|w| write_u8(w, &[5, 12], &u8_data)),
                json("uint8", &[5, 12], u8_data.iter().map(|&b| u32::from(b)).collect()),
            ),
            (
                write("rust_1d.npy", &|w| write_f32(w, &[special.len()], &special)),
                json("float32", &[special.len()], bits(&special)),
            ),
            (
                write("rust_scalar.npy", &|w| write_f32(w, &[], &[2.5])),
                json("float32", &[], bits(&[2.5])),
            ),
            (
                write("rust_empty.npy", &|w| write_u8(w, &[0, 4], &[])),
                json("uint8", &[0, 4], vec![]),
            ),
        ];
        for (path, expected) in checks {
            // Passed as a file: the inline JSON of rust_1d.npy is over Linux's 128 KiB argument limit.
            let expected_path = path.with_extension("json");
            std::fs::write(&expected_path, expected).unwrap();
            let stdout = run_python(&[
                python_script("check_npy.py").as_os_str(),
                path.as_os_str(),
                expected_path.as_os_str(),
            ]);
            assert!(stdout.starts_with("ok "), "{}: {stdout}", path.display());
        }

        // Same array written by NumPy and by us: identical header dict and data bytes (only the
        // header padding may differ: recent NumPy leaves spare room to grow the first axis).
        for (ours, reference) in [
            ("rust_f32.npy", "ref_f32_2x3x4.npy"),
            ("rust_u8.npy", "ref_u8_5x12.npy"),
        ] {
            let split = |name: &str| {
                let bytes = std::fs::read(dir.path().join(name)).unwrap();
                let header_len = read_header(&mut Cursor::new(&bytes)).unwrap().header_len;
                let dict = String::from_utf8(bytes[10..header_len].to_vec())
                    .unwrap()
                    .trim_end()
                    .to_owned();
                (dict, bytes[header_len..].to_vec())
            };
            assert_eq!(split(ours), split(reference), "{ours} vs {reference}");
        }
    }
}
