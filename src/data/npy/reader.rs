//! [`NpyReader`]: streams an `.npy` file's rows (first axis) as `f32`, a chunk at a time, so a
//! large array never has to fit in memory. The header is read and checked by `header.rs`.

use std::io::{self, Read};

use crate::data::npy::header::{ParsedHeader, read_header_full};
use crate::data::npy::{ByteOrder, CHUNK_BYTES, NpyDtype, NpyError, NpyHeader};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::header::read_header;
    use crate::data::npy::testutil::{bits, dict_with, make_fixtures, npy_file};
    use crate::data::npy::writer::{write_f32, write_u8};
    use std::io::Cursor;

    fn read_all(bytes: &[u8], rows_per_call: usize) -> Result<(NpyHeader, Vec<f32>), NpyError> {
        let mut reader = NpyReader::new(Cursor::new(bytes))?;
        let mut out = Vec::new();
        while reader.read_rows_f32(rows_per_call, &mut out)? > 0 {}
        Ok((reader.header().clone(), out))
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

    /// Interop with real NumPy (needs python3 with numpy; fails, never skips, without).
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
}
