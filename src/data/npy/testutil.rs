//! Test helpers shared by the codec's tests: hand-made `.npy` bytes, and running the NumPy
//! scripts of `tests/python` (python3 with numpy must be installed: the interop tests fail,
//! never skip, without it).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::data::npy::{ALIGN, MAGIC};

/// An `.npy` file with the given version and raw header dict text (padded like NumPy does).
pub fn npy_file(version: (u8, u8), dict: &str, data: &[u8]) -> Vec<u8> {
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

/// A version 1.0 style header dict with the given `descr` and `shape` literals.
pub fn dict_with(descr: &str, shape: &str) -> String {
    format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}")
}

/// The bit patterns of `values`, so NaNs and signed zeros compare exactly.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A script of `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name)
}

/// Runs `python3 args...` and returns stdout; panics with a clear message on any failure.
pub fn run_python(args: &[&std::ffi::OsStr]) -> String {
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

/// A temporary folder of `.npy` files written by NumPy (`make_npy_fixtures.py`).
pub fn make_fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_python(&[
        python_script("make_npy_fixtures.py").as_os_str(),
        dir.path().as_os_str(),
    ]);
    dir
}
