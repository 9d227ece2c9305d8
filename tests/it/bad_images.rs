//! A folder of broken and unusual images, under `on_error: fail` (the default) and `skip`.

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use crate::support::{BASIC, Project};

/// Bytes of an encoded test image.
fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn rgb(w: u32, h: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 9 % 256) as u8, (y * 7 % 256) as u8, 99])
    }))
}

/// Files `ingest` cannot read: a dangling link, a link loop, and (unless we are root, who
/// reads anything) a file without read permission.
fn unreadable(p: &Project) -> Vec<&'static str> {
    std::os::unix::fs::symlink("nowhere.png", p.path("images/cat.dangling.png")).unwrap();
    std::os::unix::fs::symlink("dog.loop.png", p.path("images/dog.loop.png")).unwrap();
    let mut bad = vec!["cat.dangling.png", "dog.loop.png"];
    let locked = p.path("images/cat.locked.png");
    std::fs::write(&locked, encoded(rgb(8, 8), image::ImageFormat::Png)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&locked).is_err() {
        bad.push("cat.locked.png");
    }
    bad
}

/// Files that do not decode, with a word of the reason each must give.
fn undecodable(p: &Project) -> Vec<(&'static str, &'static str)> {
    let jpeg = encoded(rgb(40, 30), image::ImageFormat::Jpeg);
    let mut png = encoded(rgb(8, 8), image::ImageFormat::Png);
    png[29] ^= 0xff; // inside the IHDR chunk's CRC
    let files: [(&str, Vec<u8>); 4] = [
        ("cat.zero.jpg", Vec::new()),
        ("dog.truncated.jpg", jpeg[..jpeg.len() / 2].to_vec()),
        ("cat.text.jpg", b"this is not an image\n".to_vec()),
        ("dog.bad_crc.png", png),
    ];
    for (name, bytes) in files {
        std::fs::write(p.path(&format!("images/{name}")), bytes).unwrap();
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    std::fs::copy(
        format!("{repo}/tests/fixtures/bad_images/dog.bomb.png"),
        p.path("images/dog.bomb.png"),
    )
    .unwrap();
    vec![
        ("cat.zero.jpg", ""),
        ("dog.truncated.jpg", ""),
        ("cat.text.jpg", ""),
        ("dog.bad_crc.png", ""),
        ("dog.bomb.png", "too large"),
    ]
}

/// Unusual but valid images: all must be used.
fn unusual(p: &Project) -> Vec<&'static str> {
    let sixteen = image::DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(9, 7, |x, y| {
        image::Rgb([x as u16 * 7000, y as u16 * 9000, 40000])
    }));
    std::fs::write(
        p.path("images/cat.16bit.png"),
        encoded(sixteen, image::ImageFormat::Png),
    )
    .unwrap();
    let gray_alpha = image::DynamicImage::ImageLumaA8(image::ImageBuffer::from_fn(9, 7, |x, _| {
        image::LumaA([x as u8 * 20, 128])
    }));
    std::fs::write(
        p.path("images/dog.gray_alpha.png"),
        encoded(gray_alpha, image::ImageFormat::Png),
    )
    .unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    for f in ["cat.cmyk.jpg", "dog.progressive.jpg", "cat.exif_rotated.jpg"] {
        std::fs::copy(
            format!("{repo}/tests/fixtures/bad_images/{f}"),
            p.path(&format!("images/{f}")),
        )
        .unwrap();
    }
    vec![
        "cat.16bit.png",
        "dog.gray_alpha.png",
        "cat.cmyk.jpg",
        "dog.progressive.jpg",
        "cat.exif_rotated.jpg",
    ]
}

fn project(good: u32) -> Project {
    let p = Project::new();
    for i in 0..good {
        p.image(&format!("images/cat.{i}.png"), 12, 10, i)
            .image(&format!("images/dog.{i}.png"), 12, 10, 100 + i);
    }
    p
}

fn skipped(p: &Project, stage: &str) -> Vec<(String, String)> {
    let ptr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path(&format!("cache/pipelines/t/{stage}.json"))).unwrap())
            .unwrap();
    let fp = ptr["fingerprint"].as_str().unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path(&format!("cache/artifacts/{fp}.json"))).unwrap()).unwrap();
    rec["summary"]["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| (f["path"].as_str().unwrap().into(), f["reason"].as_str().unwrap().into()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fail_lists_every_unreadable_file_then_every_undecodable_one() {
    let p = project(6);
    p.pipeline(BASIC);
    let bad = unreadable(&p);
    let run = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for f in &bad {
        assert_contains!(run.stderr, f, "`{f}` is not listed:\n{}", run.stderr);
    }
    assert_contains!(run.stderr, "on_error: skip");
    // Once those are gone, the images that do not decode are all listed by `resize`.
    for f in &bad {
        std::fs::remove_file(p.path(&format!("images/{f}"))).unwrap();
    }
    let broken = undecodable(&p);
    unusual(&p);
    let run = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_contains!(run.stderr, &format!("{} image(s) could not be used", broken.len()));
    for (f, why) in &broken {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(f))
            .unwrap_or_else(|| panic!("`{f}` is not listed:\n{}", run.stderr));
        assert_contains!(line, why);
    }
    // What finished before is kept: a rerun does not hash the images again.
    assert!(run.cached("ingest") || run.ran("ingest"));
    let again = p.run(&["run", "pipeline.yaml"]);
    assert!(again.cached("ingest") && again.cached("split"), "{}", again.stdout);
}

#[test]
fn skip_goes_on_and_records_every_skipped_file_with_its_reason() {
    let p = project(6);
    p.pipeline(&BASIC.replace("    path: images\n", "    path: images\n    on_error: skip\n"));
    let bad = unreadable(&p);
    let broken = undecodable(&p);
    let odd = unusual(&p);
    let run = p.run(&["run", "pipeline.yaml"]).ok();
    let at_ingest = skipped(&p, "ingest");
    let at_resize = skipped(&p, "resize");
    let names = |v: &[(String, String)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    let mut want_ingest: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
    want_ingest.sort();
    assert_eq!(names(&at_ingest), want_ingest);
    let mut want_resize: Vec<String> = broken.iter().map(|(s, _)| s.to_string()).collect();
    want_resize.sort();
    let mut got_resize = names(&at_resize);
    got_resize.sort();
    assert_eq!(got_resize, want_resize);
    assert!(at_resize.iter().all(|(_, why)| !why.is_empty()));
    assert!(
        at_resize
            .iter()
            .any(|(p, why)| p == "dog.bomb.png" && why.contains("too large")),
        "{at_resize:?}"
    );
    // Every good and every unusual image made it through.
    // (Root reads the file without permissions: then it is a good image.)
    let readable_locked = 3 - bad.len();
    let resize = run.line("resize");
    assert_contains!(
        resize,
        &format!("ran     {} rows", 12 + odd.len() + readable_locked),
        "{resize}"
    );
    assert_contains!(
        resize,
        &format!("({} skipped under `on_error: skip`)", broken.len()),
        "{resize}"
    );
    assert_contains!(run.stdout, "   skipped dog.bomb.png: ");
    let paths = p.column("t", "resize", "path");
    for f in &odd {
        assert!(paths.contains(&f.to_string()), "{f} is missing from {paths:?}");
    }
    // `audit` shows them too.
    let audit = p.run(&["audit", "pipeline.yaml"]).ok();
    for f in bad.iter().chain(broken.iter().map(|(f, _)| f)) {
        assert_contains!(
            audit.stdout,
            &format!("   skipped: {f}: "),
            "audit misses {f}:\n{}",
            audit.stdout
        );
    }
}

#[test]
fn the_size_limits_are_params() {
    let p = project(4);
    p.image("images/dog.big.png", 300, 200, 7);
    p.pipeline(&BASIC.replace("    path: images\n", "    path: images\n    max_pixels: 50000\n"));
    let run = p.run(&["run", "pipeline.yaml"]);
    assert_eq!(run.code, 1);
    assert_contains!(run.stderr, "dog.big.png");
    assert_contains!(run.stderr, "too large");
    let bad = p.run(&["check", "pipeline.yaml", "--set", "ingest.max_pixels=0"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_contains!(bad.stderr, "max_pixels");
}
