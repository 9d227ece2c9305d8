//! Small artifacts written into a cache for the analysis tests.

use crate::cache::store::Cache;
use crate::cache::store::{Format, Record};
use crate::data::dataset::columns::PixelValues;
use crate::data::dataset::columns::Rows;
use crate::data::dataset::writer::ArtifactWriter;
use crate::data::dataset::{Dtype, Meta};
use crate::data::lineage::LineageEntry;

pub fn entry(stage: &str, kind: &str, fp: &str, fitted: serde_json::Value) -> LineageEntry {
    LineageEntry {
        stage: stage.into(),
        kind: kind.into(),
        version: 1,
        params: serde_json::json!({}),
        fingerprint: fp.into(),
        fitted,
    }
}

/// Writes a float32 [2, 2, 3] artifact into the cache under `fp` and returns its path.
pub fn artifact(
    cache: &Cache,
    fp: &str,
    input: Option<&str>,
    lineage: Vec<LineageEntry>,
    rows: &[(&str, &str, i32)],
    pixels: Vec<f32>,
) -> std::path::PathBuf {
    let meta = Meta {
        classes: vec!["cat".into(), "dog".into()],
        has_partition: true,
        pixels: Some(([2, 2, 3], Dtype::Float32)),
        lineage,
        pixels_from: None,
        segments: Vec::new(),
    };
    let temp = cache.temp_path(fp);
    let mut w = ArtifactWriter::create(&temp, meta).unwrap();
    let r = Rows {
        id: rows
            .iter()
            .map(|(p, _, _)| crate::data::hash::sha256_hex(p.as_bytes()))
            .collect(),
        path: rows.iter().map(|(p, _, _)| p.to_string()).collect(),
        label: rows.iter().map(|(_, _, l)| *l).collect(),
        class: rows
            .iter()
            .map(|(_, _, l)| ["cat", "dog"][*l as usize].to_string())
            .collect(),
        partition: Some(rows.iter().map(|(_, p, _)| p.to_string()).collect()),
    };
    w.write(&r, Some(PixelValues::F32(pixels))).unwrap();
    let written = w.finish().unwrap();
    let record = Record {
        fingerprint: fp.into(),
        format: Format::Arrow,
        kind: "test".into(),
        version: 1,
        pipeline: "t".into(),
        stage: fp.into(),
        params: serde_json::json!({}),
        inputs: input
            .map(|i| vec![("in".to_string(), i.to_string())])
            .unwrap_or_default(),
        content: None,
        rows: written.rows,
        bytes: written.bytes,
        blake3: written.blake3,
        chunks: Some(written.chunks),
        fitted: serde_json::Value::Null,
        summary: serde_json::Value::Null,
        seconds: 0.0,
        check_seconds: 0.0,
        created_unix: 0,
    };
    cache.commit(&temp, &record).unwrap();
    cache.data_path(fp)
}

pub const ROWS: [(&str, &str, i32); 4] = [
    ("a.png", "train", 0),
    ("b.png", "train", 1),
    ("c.png", "test", 0),
    ("d.png", "test", 1),
];

pub fn pixels(values: [f32; 4]) -> Vec<f32> {
    values.iter().flat_map(|v| (0..12).map(move |i| v + i as f32)).collect()
}
