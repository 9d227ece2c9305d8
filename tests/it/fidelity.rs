//! `resize`'s pixels against Pillow's, JPEG by JPEG (tests/python/jpeg_fidelity.py): JPEGs of
//! many kinds (4:4:4, 4:2:2, 4:2:0, progressive, 96x96 to 2048x1536) to 32, 64 and 224 pixels.
//! A JPEG decoded at a reduced scale is no further from Pillow's full decode than Pillow's own
//! reduced decode (`draft`, as `Image.thumbnail` uses it) is, +25%; every image decoded whole
//! is within 2 levels of Pillow's full decode + resize on all but 0.5% of its values, and
//! never 8 away.

#[test]
fn jpegs_come_out_as_close_to_pillow_as_its_own_reduced_decode() {
    let work = tempfile::tempdir().unwrap();
    let out = crate::support::python(
        "jpeg_fidelity.py",
        &[env!("CARGO_BIN_EXE_pipeline"), work.path().to_str().unwrap()],
    );
    assert_contains!(out, "70 JPEGs");
    for size in [32, 64] {
        // The rule still reduces the big ones: the comparison is not empty.
        let line = out
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{size}x{size}:")))
            .find(|l| l.contains("decoded at a reduced scale"))
            .unwrap();
        assert!(!line.contains("reduced scale: 0;"), "{out}");
    }
}
