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

/// Every kind of JPEG and PNG (tests/python/decode_corpus.py lists them: subsamplings,
/// progressive, restarts, CMYK, every EXIF orientation, broken EXIF, ICC, odd APPn segments,
/// palettes with tRNS, 1-16 bits, interlaced, APNG, and damaged files): nothing Pillow decodes
/// is refused (but a coding refused by name), every used image is within 2 levels of Pillow's
/// on all but 0.5% of its values, and every refusal is one plain sentence.
#[test]
fn every_kind_of_file_decodes_as_pillow_does_or_is_refused_in_plain_words() {
    let work = tempfile::tempdir().unwrap();
    let out = crate::support::python(
        "decode_corpus.py",
        &[env!("CARGO_BIN_EXE_pipeline"), work.path().to_str().unwrap()],
    );
    assert_contains!(out, "0 problem(s)");
    // The files that must be used are: the damaged ones are the only refusals.
    for line in out.lines().filter(|l| l.starts_with("refused")) {
        assert!(line.contains(".bad-") || line.contains("arithmetic"), "{out}");
    }
    assert_contains!(out, "jpeg-short-app14.jpg: mean");
    // A broken EXIF block: used upright as stored, with a note that says so.
    assert_contains!(
        out,
        "jpeg-broken-exif.jpg: its EXIF block cannot be read, so its orientation is ignored"
    );
    assert_contains!(out, "refused  dog.");
}

/// PngSuite's images (tests/fixtures/pngsuite): every colour type and bit depth, interlaced
/// or not, with transparency; each is used and within 2 levels of Pillow's decode.
#[test]
fn the_png_suite_decodes_as_pillow_does() {
    let work = tempfile::tempdir().unwrap();
    let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pngsuite");
    let out = crate::support::python(
        "decode_corpus.py",
        &[
            env!("CARGO_BIN_EXE_pipeline"),
            work.path().to_str().unwrap(),
            "--images",
            suite,
        ],
    );
    assert_contains!(out, "28 files: 28 used, 0 refused");
    assert_contains!(out, "0 problem(s)");
}
