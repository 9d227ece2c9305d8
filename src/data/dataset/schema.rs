//! An artifact's [`Meta`] to and from its Arrow schema: the columns a file stores, the
//! columns a reader hands out, and the `pipeline.*` schema metadata (see the table in
//! [`crate::data::dataset`]). The metadata text is part of every artifact's bytes, so its
//! keys and JSON forms never change.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_schema::{DataType, Field, Schema};

use crate::data::dataset::{Dtype, Meta};
use crate::data::lineage::LineageEntry;

impl Meta {
    /// The schema stored in the file (a view has no `pixels` column; a segmented artifact
    /// has `segment` and `segment_row` instead).
    pub fn schema(&self) -> Schema {
        let mut schema = self.schema_with_pixels(self.pixels_from.is_none() && self.segments.is_empty());
        if !self.segments.is_empty() {
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("segment", DataType::UInt16, false));
            fields.push(Field::new("segment_row", DataType::UInt32, false));
            schema = Schema::new(fields).with_metadata(schema.metadata().clone());
        }
        schema
    }

    /// The schema of the batches a reader hands out: with `pixels` whenever the artifact has
    /// pixels, stored or viewed.
    pub fn read_schema(&self) -> Schema {
        self.schema_with_pixels(true)
    }

    fn schema_with_pixels(&self, with_pixels: bool) -> Schema {
        let mut fields = vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("path", DataType::Utf8, false),
            Field::new("label", DataType::Int32, false),
            Field::new("class", DataType::Utf8, false),
        ];
        if self.has_partition {
            fields.push(Field::new("partition", DataType::Utf8, false));
        }
        let mut md = HashMap::new();
        md.insert(
            "pipeline.classes".into(),
            serde_json::to_string(&self.classes).expect("strings serialize"),
        );
        md.insert(
            "pipeline.lineage".into(),
            serde_json::to_string(&self.lineage).expect("json values serialize"),
        );
        md.insert("pipeline.channel_order".into(), "RGB".into());
        if let Some((shape, dtype)) = self.pixels {
            if with_pixels {
                fields.push(pixels_field(shape, dtype));
            }
            if let Some(from) = &self.pixels_from {
                md.insert("pipeline.pixels_from".into(), from.clone());
            }
            if !self.segments.is_empty() {
                md.insert(
                    "pipeline.segments".into(),
                    serde_json::to_string(&self.segments).expect("strings serialize"),
                );
            }
            md.insert(
                "pipeline.shape".into(),
                format!("[{}, {}, {}]", shape[0], shape[1], shape[2]),
            );
            md.insert("pipeline.dtype".into(), dtype.name().into());
        }
        Schema::new(fields).with_metadata(md)
    }

    /// Reads the metadata back from a schema written by [`Meta::schema`] (or
    /// [`Meta::read_schema`]); an error names the key that is missing or unreadable.
    pub fn from_schema(schema: &Schema) -> Result<Meta> {
        let md = schema.metadata();
        let get = |k: &str| {
            md.get(k)
                .with_context(|| format!("artifact schema lacks metadata `{k}`"))
        };
        // The row columns every artifact has (a batch's length is theirs, checked by Arrow).
        for (name, dt) in [
            ("id", DataType::Utf8),
            ("path", DataType::Utf8),
            ("label", DataType::Int32),
            ("class", DataType::Utf8),
        ] {
            if schema.field_with_name(name).ok().map(|f| f.data_type()) != Some(&dt) {
                bail!("the artifact has no `{name}` column of type {dt}");
            }
        }
        let classes: Vec<String> = serde_json::from_str(get("pipeline.classes")?)?;
        let lineage: Vec<LineageEntry> = serde_json::from_str(get("pipeline.lineage")?)?;
        let pixels = match md.get("pipeline.shape") {
            Some(shape) => {
                let shape: [usize; 3] = serde_json::from_str(shape)?;
                let dtype: Dtype = serde_json::from_value(serde_json::Value::String(get("pipeline.dtype")?.clone()))?;
                let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                if shape.contains(&0) || values.is_none_or(|n| n > i32::MAX as usize) {
                    bail!("artifact metadata gives the impossible image shape {shape:?}");
                }
                if let Ok(field) = schema.field_with_name("pixels")
                    && field.data_type() != pixels_field(shape, dtype).data_type()
                {
                    bail!("the `pixels` column does not hold {shape:?} images of {}", dtype.name());
                }
                Some((shape, dtype))
            }
            None => None,
        };
        let pixels_from = md.get("pipeline.pixels_from").cloned();
        let segments: Vec<String> = match md.get("pipeline.segments") {
            Some(v) => serde_json::from_str(v)?,
            None => Vec::new(),
        };
        // Files beside this one, never a path elsewhere.
        for name in pixels_from.iter().chain(&segments) {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                bail!("artifact metadata names `{name}`, which is not a file beside it");
            }
        }
        if segments.len() > usize::from(u16::MAX) {
            bail!(
                "artifact metadata names {} segments, more than a row can point to",
                segments.len()
            );
        }
        Ok(Meta {
            classes,
            has_partition: schema.field_with_name("partition").is_ok(),
            pixels,
            lineage,
            pixels_from,
            segments,
        })
    }
}

/// The `pixels` field: a fixed-size list of `H*W*C` values of `dtype`.
fn pixels_field(shape: [usize; 3], dtype: Dtype) -> Field {
    let len = (shape[0] * shape[1] * shape[2]) as i32;
    Field::new(
        "pixels",
        DataType::FixedSizeList(Arc::new(Field::new("item", dtype.arrow(), false)), len),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(stage: &str, kind: &str, fitted: serde_json::Value) -> LineageEntry {
        LineageEntry {
            stage: stage.into(),
            kind: kind.into(),
            version: 1,
            params: json!({ "size": [4, 2] }),
            fingerprint: format!("{stage}-fingerprint"),
            fitted,
        }
    }

    fn meta() -> Meta {
        Meta {
            classes: vec!["cat".into(), "dog".into(), "ü".into()],
            has_partition: true,
            pixels: Some(([2, 4, 3], Dtype::Float32)),
            lineage: vec![
                entry("ingest", "ingest", serde_json::Value::Null),
                entry("center", "mean_subtract", json!({ "mean_rgb": [0.5, 0.25, 0.125] })),
            ],
            pixels_from: None,
            segments: Vec::new(),
        }
    }

    fn names(schema: &Schema) -> Vec<&str> {
        schema.fields().iter().map(|f| f.name().as_str()).collect()
    }

    #[test]
    fn meta_round_trips_through_the_schema() {
        let stored = meta();
        let view = Meta {
            pixels_from: Some("base.arrow".into()),
            ..meta()
        };
        let segmented = Meta {
            pixels: Some(([2, 4, 3], Dtype::Uint8)),
            segments: vec!["a.arrow".into(), "b.arrow".into()],
            ..meta()
        };
        let rows_only = Meta {
            has_partition: false,
            pixels: None,
            ..meta()
        };
        for meta in [stored, view, segmented, rows_only] {
            assert_eq!(Meta::from_schema(&meta.schema()).unwrap(), meta);
            assert_eq!(Meta::from_schema(&meta.read_schema()).unwrap(), meta);
        }
    }

    #[test]
    fn metadata_text_is_the_documented_json() {
        let schema = meta().schema();
        let md = schema.metadata();
        assert_eq!(md["pipeline.shape"], "[2, 4, 3]");
        assert_eq!(md["pipeline.dtype"], "float32");
        assert_eq!(md["pipeline.channel_order"], "RGB");
        assert_eq!(md["pipeline.classes"], r#"["cat","dog","ü"]"#);
        assert_eq!(
            md["pipeline.lineage"],
            r#"[{"stage":"ingest","kind":"ingest","version":1,"params":{"size":[4,2]},"fingerprint":"ingest-fingerprint"},"#
                .to_string()
                + r#"{"stage":"center","kind":"mean_subtract","version":1,"params":{"size":[4,2]},"fingerprint":"center-fingerprint","fitted":{"mean_rgb":[0.5,0.25,0.125]}}]"#
        );
        assert!(!md.contains_key("pipeline.pixels_from") && !md.contains_key("pipeline.segments"));
    }

    #[test]
    fn stored_and_read_columns_follow_the_kind_of_artifact() {
        let pixels_type = |schema: &Schema| schema.field_with_name("pixels").unwrap().data_type().clone();
        let stored = meta();
        assert_eq!(
            names(&stored.schema()),
            ["id", "path", "label", "class", "partition", "pixels"]
        );
        assert_eq!(
            pixels_type(&stored.schema()),
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 24)
        );
        let view = Meta {
            pixels_from: Some("base.arrow".into()),
            ..meta()
        };
        assert_eq!(names(&view.schema()), ["id", "path", "label", "class", "partition"]);
        assert_eq!(names(&view.read_schema()), names(&stored.schema()));
        let segmented = Meta {
            segments: vec!["a.arrow".into()],
            ..meta()
        };
        assert_eq!(
            names(&segmented.schema()),
            ["id", "path", "label", "class", "partition", "segment", "segment_row"]
        );
        assert_eq!(names(&segmented.read_schema()), names(&stored.schema()));
    }

    #[test]
    fn missing_or_bad_metadata_is_named() {
        let schema = meta().schema();
        let without = |key: &str| {
            let mut md = schema.metadata().clone();
            md.remove(key);
            Schema::new(schema.fields().clone()).with_metadata(md)
        };
        for key in ["pipeline.classes", "pipeline.lineage", "pipeline.dtype"] {
            let err = Meta::from_schema(&without(key)).unwrap_err().to_string();
            assert_eq!(err, format!("artifact schema lacks metadata `{key}`"));
        }
        let mut md = schema.metadata().clone();
        md.insert("pipeline.dtype".to_string(), "float64".to_string());
        let bad = Schema::new(schema.fields().clone()).with_metadata(md);
        assert!(Meta::from_schema(&bad).is_err());
    }
}
