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
//!
//! # Why not the `npyz` crate
//!
//! `npyz` 0.9.1 (the maintained `.npy` crate) was tried in this codec's place against these
//! tests, and fails the hostile-header ones in ways glue cannot mend without keeping the
//! header code anyway:
//! - it trusts the header length field: a 12-byte file (version 2, length `0xFFFFFFF0`) makes
//!   it allocate 4 GiB before reading anything; under a 2 GB address-space limit
//!   (`ulimit -v 2000000`) the process aborts (`memory allocation of 4294967280 bytes
//!   failed`), it is not an error;
//! - it multiplies the shape unchecked (`shape.iter().product()`, and again for the strides):
//!   `(4294967296, 4294967296, 16)` panics (`attempt to multiply with overflow`) in a build
//!   with overflow checks (tests, fuzzing), and in release wraps to an element count of 0 that
//!   it then reports as the array's length.
//!
//! Guarding both means reading the preamble and parsing the header dict before handing the
//! file over: keeping `header` and `literal` (668 of this codec's 1,700 lines, tests
//! included) to replace `reader` and `writer`, with two parsers of one header that may
//! disagree on what is valid. (It does refuse a deeply nested header cleanly: its parser's
//! stack guard returns an error.)
//!
//! # Files
//! - `header`: reads the preamble and interprets the header dict (`read_header`).
//! - `literal`: parses the Python literals the header dict is written in.
//! - `reader`: `NpyReader` streams the rows (first axis), converted to `f32`.
//! - `writer`: `write_f32` and `write_u8`.
//!
//! This file holds what they share: the element types, the header, the errors and the
//! layout constants.

use std::fmt;
use std::io;

pub mod header;
mod literal;
pub mod reader;
#[cfg(test)]
mod testutil;
pub mod writer;

/// The six bytes every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The data section starts at a multiple of this many bytes (NumPy's `ARRAY_ALIGN`).
const ALIGN: usize = 64;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
