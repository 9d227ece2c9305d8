//! Reading an `.npy` header: the magic bytes, the format version, the header length, then the
//! header dict (`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`), whose dtype,
//! order and shape are checked here, so the reader (`reader.rs`) can trust them.

use std::io::{self, Read};

use crate::data::npy::literal::{Value, parse_literal};
use crate::data::npy::{ByteOrder, MAGIC, NpyDtype, NpyError, NpyHeader, ShapeRepr};

/// Largest header accepted: generous for any real array, small enough to allocate safely.
const MAX_HEADER_LEN: usize = 1 << 20;

/// Everything the reader needs from a header, including what [`NpyHeader`] does not expose.
#[derive(Debug)]
pub(super) struct ParsedHeader {
    /// What callers see.
    pub header: NpyHeader,
    /// Byte order of the data section.
    pub order: ByteOrder,
    /// Total size of the data section (already checked not to overflow).
    pub data_bytes: usize,
}

/// Reads only the header (cheap; for shape/dtype checks before loading).
///
/// Leaves `r` positioned at the first data byte. A 0-d array is accepted here (shape `[]`).
pub fn read_header(r: &mut impl Read) -> Result<NpyHeader, NpyError> {
    read_header_full(r).map(|parsed| parsed.header)
}

/// [`read_header`], keeping what the reader needs too.
pub(super) fn read_header_full(r: &mut impl Read) -> Result<ParsedHeader, NpyError> {
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

/// Interprets the header dict. `py2_longs` allows Python 2's `3L` integers (1.0/2.0 files only,
/// as NumPy does). `header_len` is left 0 for the caller to fill in.
fn parse_header_text(text: &str, py2_longs: bool) -> Result<ParsedHeader, NpyError> {
    let bad = |msg: String| NpyError::BadHeader(msg);
    let value = parse_literal(text, py2_longs).map_err(bad)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::testutil::{dict_with, npy_file};
    use std::io::Cursor;

    fn header_of(dict: &str) -> Result<NpyHeader, NpyError> {
        read_header(&mut Cursor::new(npy_file((1, 0), dict, &[])))
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
}
