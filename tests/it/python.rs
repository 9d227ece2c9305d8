//! The Python package (`python/`) against the CLI: `tests/python/check_package.py`, run by
//! the interpreter scripts/test.sh installs the package into (`PIPELINE_PYTHON`), on the
//! shipped photos and the decoding corpus, with a pass over a 1 GiB artifact.

use std::process::Command;

#[test]
fn the_python_package_gives_the_clis_values_errors_and_datasets_bit_for_bit() {
    let python = std::env::var("PIPELINE_PYTHON").unwrap_or_else(|_| {
        panic!("no Python package: scripts/test.sh builds it (pip install ./python) and sets PIPELINE_PYTHON")
    });
    let work = tempfile::tempdir().unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(&python)
        .arg(format!("{repo}/tests/python/check_package.py"))
        .arg(env!("CARGO_BIN_EXE_pipeline"))
        .arg(work.path())
        .args(["--rss-mb", "1024"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_package.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["bit for bit the CLI's", "the CLI's messages", "GIL:", "memory:"] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }
}
