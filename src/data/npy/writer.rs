//! Writing `.npy` files: version 1.0, C order, little-endian `float32` ([`write_f32`]) or
//! `uint8` ([`write_u8`]), the form every NumPy since 1.0 reads. The header is padded so the
//! data starts on a 64-byte boundary, as `np.save` does.

use std::io::Write;

use crate::data::npy::{ALIGN, CHUNK_BYTES, MAGIC, NpyError, ShapeRepr};

/// NumPy 2's `NPY_MAXDIMS`: we refuse to write arrays NumPy could not load.
const MAX_DIMS: usize = 64;

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
    use crate::data::npy::header::read_header;
    use crate::data::npy::testutil::{bits, make_fixtures, python_script, run_python};
    use std::io::Cursor;

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

    /// Interop with real NumPy (needs python3 with numpy; fails, never skips, without).
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
