//! Saving and loading weights as [safetensors]: one little-endian F32 tensor
//! per parameter under its canonical name (`dense0.weight`, `conv0.bias`, ...;
//! layouts in the [module docs](super)), plus a string→string `__metadata__`
//! map holding the caller's entries and, under [`ARCHITECTURE_KEY`], the
//! model's [`ModelSpec`] as JSON, which [`load`] uses to rebuild the model.
//!
//! Files are written by this module rather than `safetensors::serialize`
//! because that function emits the metadata map in `HashMap` order, which
//! changes from run to run; here the header is built from sorted maps, so the
//! same weights and metadata always give the same bytes (content hashing and
//! the determinism tests depend on it). Reading uses the `safetensors` crate,
//! so every file is also validated by the reference parser.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use crate::model::net::{Model, ModelSpec};
use crate::model::{ModelError, Tensor};

/// Metadata key holding the architecture JSON (reserved).
pub const ARCHITECTURE_KEY: &str = "architecture";
/// Metadata key holding [`FORMAT_VERSION`] (reserved).
pub const FORMAT_KEY: &str = "format";
/// Identifies files written by this module.
pub const FORMAT_VERSION: &str = "pipeline-model/1";

/// Serializes `model` with the caller's `metadata` (which must not use the
/// reserved keys [`ARCHITECTURE_KEY`] and [`FORMAT_KEY`]).
pub fn to_bytes(model: &Model, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, ModelError> {
    for key in [ARCHITECTURE_KEY, FORMAT_KEY] {
        if metadata.contains_key(key) {
            return Err(ModelError::Format(format!(
                "metadata key {key:?} is reserved (written by the model itself)"
            )));
        }
    }
    let mut meta = metadata.clone();
    meta.insert(ARCHITECTURE_KEY.into(), serde_json::to_string(&model.spec())?);
    meta.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
    tensors_to_bytes(model.stored(), &meta)
}

/// Any F32 tensors and a metadata map as safetensors, laid out by name: the same tensors
/// and metadata always give the same bytes.
pub fn tensors_to_bytes(mut params: Vec<&Tensor>, meta: &BTreeMap<String, String>) -> Result<Vec<u8>, ModelError> {
    // safetensors lays data out sorted by name (all tensors share one dtype).
    params.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header: BTreeMap<String, Value> = BTreeMap::new();
    header.insert("__metadata__".into(), json!(meta));
    let mut offset = 0usize;
    for p in &params {
        let end = offset + 4 * p.data.len();
        header.insert(
            p.name.clone(),
            json!({ "dtype": "F32", "shape": p.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&header)?;
    // The spec pads the header with spaces so the data starts 8-byte aligned.
    header.resize(header.len().next_multiple_of(8), b' ');

    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    for p in &params {
        out.extend(p.data.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(out)
}

/// Parses a file produced by [`to_bytes`]: rebuilds the architecture from the
/// metadata, fills in every tensor, and returns the model with the caller's
/// metadata (reserved keys removed). Any missing, extra, wrongly typed or
/// wrongly shaped tensor is an error naming it.
pub fn from_bytes(bytes: &[u8]) -> Result<(Model, BTreeMap<String, String>), ModelError> {
    let mut meta = metadata_of(bytes)?;
    let arch = meta.remove(ARCHITECTURE_KEY).ok_or_else(|| {
        ModelError::Format(format!(
            "no {ARCHITECTURE_KEY:?} entry in __metadata__: not a pipeline model file"
        ))
    })?;
    if let Some(v) = meta.remove(FORMAT_KEY)
        && v != FORMAT_VERSION
    {
        return Err(ModelError::Format(format!(
            "unsupported format {v:?} (this build reads {FORMAT_VERSION:?})"
        )));
    }
    let spec: ModelSpec = serde_json::from_str(&arch)
        .map_err(|e| ModelError::Format(format!("architecture metadata is not a valid model spec: {e}")))?;
    // Refuse before allocating: corrupt metadata must not trigger a huge allocation.
    let data_bytes = bytes.len().saturating_sub(8);
    match spec.param_count() {
        Some(n) if n.saturating_mul(4) <= data_bytes => {}
        n => {
            return Err(ModelError::Format(format!(
                "architecture implies {} parameters but the file holds only {data_bytes} bytes",
                n.map_or("more than usize::MAX".to_string(), |n| n.to_string())
            )));
        }
    }
    let mut model = Model::new(&spec, 0)?;

    let st = SafeTensors::deserialize(bytes)?;
    for p in model.stored_mut() {
        let view = st.tensor(&p.name).map_err(|_| {
            ModelError::Format(format!(
                "tensor {:?} required by the architecture is missing from the file",
                p.name
            ))
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::Format(format!(
                "tensor {:?} has dtype {:?}, expected F32",
                p.name,
                view.dtype()
            )));
        }
        if view.shape() != p.shape.as_slice() {
            return Err(ModelError::Format(format!(
                "tensor {:?} has shape {:?}, the architecture expects {:?}",
                p.name,
                view.shape(),
                p.shape
            )));
        }
        for (dst, src) in p.data.iter_mut().zip(view.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
    }
    let known: Vec<String> = model.stored().iter().map(|p| p.name.clone()).collect();
    let mut extra: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !known.iter().any(|k| k == n))
        .collect();
    if !extra.is_empty() {
        extra.sort_unstable();
        return Err(ModelError::Format(format!(
            "file has tensors the architecture does not use: {extra:?}"
        )));
    }
    Ok((model, meta))
}

/// The `__metadata__` map of a safetensors file (empty when it has none).
fn metadata_of(bytes: &[u8]) -> Result<BTreeMap<String, String>, ModelError> {
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    Ok(header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Every tensor of a safetensors file (all must be F32) and its metadata map.
pub fn tensors_from_bytes(bytes: &[u8]) -> Result<(Vec<Tensor>, BTreeMap<String, String>), ModelError> {
    let meta = metadata_of(bytes)?;
    let st = SafeTensors::deserialize(bytes)?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::Format(format!(
                "tensor {name:?} has dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push(Tensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, meta))
}

/// Writes [`to_bytes`] to `path` (via a temporary file and a rename, so a
/// crash never leaves a truncated model behind).
pub fn save(path: &Path, model: &Model, metadata: &BTreeMap<String, String>) -> Result<(), ModelError> {
    let bytes = to_bytes(model, metadata)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ModelError::Io { path: p, source }
    };
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads a model written by [`save`]; see [`from_bytes`].
pub fn load(path: &Path) -> Result<(Model, BTreeMap<String, String>), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cnn::CnnSpec;
    use crate::model::mlp::{Activation, DenseSpec, MlpSpec};
    use crate::model::testutil::{dense_spec, random_data};
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::process::Command;

    fn mlp(hidden: Vec<usize>, activation: Activation, seed: u64) -> Model {
        let spec = MlpSpec {
            input_len: 12,
            dense: DenseSpec {
                activation,
                ..dense_spec(hidden, 3)
            },
        };
        Model::new(&ModelSpec::Mlp(spec), seed).expect("valid spec")
    }

    fn cnn(seed: u64) -> Model {
        let spec = CnnSpec {
            input: [6, 5, 2],
            blocks: vec![3, 4],
            dense: DenseSpec {
                activation: Activation::Tanh,
                ..dense_spec(vec![5], 3)
            },
        };
        Model::new(&ModelSpec::Cnn(spec), seed).expect("valid spec")
    }

    fn meta() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("pipeline_hash".to_string(), "abc123".to_string()),
            ("classes".to_string(), r#"["cat","dog","eel"]"#.to_string()),
        ])
    }

    fn tmp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("model-io-{}-{name}.safetensors", std::process::id()))
    }

    #[test]
    fn round_trip_mlp_and_cnn() {
        for (name, model) in [
            ("mlp", mlp(vec![7, 5], Activation::Sigmoid, 1)),
            ("logreg", mlp(vec![], Activation::Relu, 2)),
            ("cnn", cnn(3)),
        ] {
            let path = tmp_path(name);
            save(&path, &model, &meta()).expect("writable temp dir");
            let (back, m) = load(&path).expect("file just written");
            std::fs::remove_file(&path).ok();
            assert_eq!(back, model, "{name}: model differs after round trip");
            assert_eq!(m, meta(), "{name}: metadata differs");
            let (x, _) = random_data(2, model.input_len(), 3, 4);
            assert_eq!(back.forward(&x, 2).ok(), model.forward(&x, 2).ok());
            // Same model and metadata ⇒ same bytes.
            let a = to_bytes(&model, &meta()).expect("serializable");
            let b = to_bytes(&back, &meta()).expect("serializable");
            assert_eq!(a, b, "{name}: bytes not deterministic");
        }
    }

    /// Writes a file with the reference serializer: tensors of `tensors_of`
    /// but architecture metadata of `arch_of`, plus optional extra tensors.
    fn forged(tensors_of: &Model, arch: Option<&Model>, extra: &[(&str, Vec<usize>)]) -> Vec<u8> {
        let arch = arch.map(|a| serde_json::to_string(&a.spec()).expect("serializable"));
        forged_json(tensors_of, arch, extra)
    }

    /// [`forged`] with the architecture metadata given as JSON text.
    fn forged_json(tensors_of: &Model, arch: Option<String>, extra: &[(&str, Vec<usize>)]) -> Vec<u8> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors_of
            .params()
            .iter()
            .map(|p| {
                let bytes = p.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (p.name.clone(), p.shape.clone(), bytes)
            })
            .collect();
        for (n, shape) in extra {
            let len: usize = shape.iter().product();
            owned.push((n.to_string(), shape.clone(), vec![0u8; 4 * len]));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, s, b)| {
                let v = safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).expect("sizes match");
                (n.clone(), v)
            })
            .collect();
        let meta = arch.map(|a| HashMap::from([(ARCHITECTURE_KEY.to_string(), a)]));
        safetensors::serialize(views, meta).expect("valid tensors")
    }

    /// The architecture JSON of [`mlp`]`(vec![7, 5], Activation::Sigmoid, _)` as
    /// `pipeline-model/1` files hold it. The text, field order included, is part of every
    /// weights file's bytes, so it must never change.
    const MLP_JSON: &str =
        r#"{"kind":"mlp","input_len":12,"hidden":[7,5],"classes":3,"activation":"sigmoid","init":"he"}"#;
    /// The architecture JSON of [`cnn`], as [`MLP_JSON`].
    const CNN_JSON: &str =
        r#"{"kind":"cnn","input":[6,5,2],"blocks":[3,4],"hidden":[5],"classes":3,"activation":"tanh","init":"he"}"#;

    #[test]
    fn architecture_json_text_is_pinned() {
        let text = |spec: &ModelSpec| serde_json::to_string(spec).expect("serializable");
        assert_eq!(text(&mlp(vec![7, 5], Activation::Sigmoid, 1).spec()), MLP_JSON);
        assert_eq!(text(&cnn(1).spec()), CNN_JSON);
        for json in [MLP_JSON, CNN_JSON] {
            let spec: ModelSpec = serde_json::from_str(json).expect("pinned JSON parses");
            assert_eq!(text(&spec), json, "parse and re-serialize changed the text");
        }
        // Fields with a default may be left out of the JSON.
        let mlp: ModelSpec = serde_json::from_str(r#"{"kind":"mlp","input_len":4,"classes":2}"#).expect("valid");
        let cnn: ModelSpec =
            serde_json::from_str(r#"{"kind":"cnn","input":[4,4,1],"blocks":[2],"classes":2}"#).expect("valid");
        assert_eq!(
            text(&mlp),
            r#"{"kind":"mlp","input_len":4,"hidden":[],"classes":2,"activation":"relu","init":"he"}"#
        );
        assert_eq!(
            text(&cnn),
            r#"{"kind":"cnn","input":[4,4,1],"blocks":[2],"hidden":[],"classes":2,"activation":"relu","init":"he"}"#
        );
    }

    /// A whole `pipeline-model/1` file, byte for byte: a logistic regression whose
    /// parameters are 0, 1, 2, ... in [`Model::params`] order.
    fn pinned_file() -> Vec<u8> {
        const HEADER: &str = concat!(
            r#"{"__metadata__":{"architecture":"{\"kind\":\"mlp\",\"input_len\":12,\"hidden\":[],"#,
            r#"\"classes\":3,\"activation\":\"relu\",\"init\":\"he\"}","classes":"[\"cat\",\"dog\",\"eel\"]","#,
            r#""format":"pipeline-model/1","pipeline_hash":"abc123"},"#,
            r#""dense0.bias":{"data_offsets":[0,12],"dtype":"F32","shape":[3]},"#,
            r#""dense0.weight":{"data_offsets":[12,156],"dtype":"F32","shape":[3,12]}}"#
        );
        let mut header = HEADER.as_bytes().to_vec();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header);
        // Data in name order: dense0.bias (parameters 36..39), then dense0.weight (0..36).
        file.extend((36..39).chain(0..36).flat_map(|i| (i as f32).to_le_bytes()));
        file
    }

    #[test]
    fn loads_and_writes_files_in_the_pipeline_model_1_format() {
        let mut model = mlp(vec![], Activation::Relu, 0);
        let values = model.params_mut().into_iter().flat_map(|p| p.data.iter_mut());
        values.enumerate().for_each(|(i, v)| *v = i as f32);
        assert_eq!(to_bytes(&model, &meta()).expect("serializable"), pinned_file());
        let (back, m) = from_bytes(&pinned_file()).expect("pinned file loads");
        assert_eq!((back, m), (model, meta()));
        // A CNN whose metadata holds the pinned architecture text.
        let model = cnn(3);
        let bytes = forged_json(&model, Some(CNN_JSON.to_string()), &[]);
        assert_eq!(from_bytes(&bytes).expect("pinned CNN loads").0, model);
    }

    fn load_err(bytes: &[u8]) -> String {
        match from_bytes(bytes) {
            Ok(_) => panic!("expected a load error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn load_reports_mismatches_clearly() {
        let small = mlp(vec![], Activation::Relu, 1);
        let big = mlp(vec![4], Activation::Relu, 1);
        // Files from the reference serializer load fine.
        let ok = forged(&big, Some(&big), &[]);
        assert_eq!(from_bytes(&ok).expect("valid file").0, big);

        let e = load_err(&forged(&small, Some(&big), &[]));
        assert!(e.contains("dense0.weight") && e.contains("shape"), "{e}");
        let e = load_err(&forged(
            &small,
            Some(&mlp(vec![], Activation::Relu, 0)),
            &[("junk", vec![2])],
        ));
        assert!(e.contains("junk") && e.contains("does not use"), "{e}");
        let mut missing = forged(&small, Some(&small), &[]);
        missing = {
            // Drop dense0.bias by re-serializing only the weight.
            let st = SafeTensors::deserialize(&missing).expect("valid file");
            let w = st.tensor("dense0.weight").expect("present");
            let meta = HashMap::from([(
                ARCHITECTURE_KEY.to_string(),
                serde_json::to_string(&small.spec()).expect("serializable"),
            )]);
            safetensors::serialize([("dense0.weight", w)], Some(meta)).expect("valid")
        };
        let e = load_err(&missing);
        assert!(e.contains("dense0.bias") && e.contains("missing"), "{e}");
        let e = load_err(&forged(&small, None, &[]));
        assert!(e.contains("architecture"), "{e}");
        // Absurd architecture in otherwise valid metadata: refused, not allocated.
        let mut huge = small.spec();
        if let ModelSpec::Mlp(s) = &mut huge {
            s.input_len = usize::MAX / 2;
        }
        let st = SafeTensors::deserialize(&ok).expect("valid file");
        let meta = HashMap::from([(
            ARCHITECTURE_KEY.to_string(),
            serde_json::to_string(&huge).expect("serializable"),
        )]);
        let views: Vec<_> = st.tensors();
        let e = load_err(&safetensors::serialize(views, Some(meta)).expect("valid"));
        assert!(e.contains("architecture implies"), "{e}");
        let e = load_err(b"not a safetensors file at all");
        assert!(e.contains("safetensors"), "{e}");
        let reserved = BTreeMap::from([(ARCHITECTURE_KEY.to_string(), "x".to_string())]);
        assert!(to_bytes(&small, &reserved).is_err());
        let e = match load(Path::new("/nonexistent/dir/m.safetensors")) {
            Ok(_) => panic!("expected an io error"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("/nonexistent/dir/m.safetensors"), "{e}");
    }

    /// numpy re-implementation of the forward pass, following the PyTorch
    /// conventions documented in the module docs (NCHW convs, HWC flatten).
    const PY_FORWARD: &str = r#"
import sys, json
import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
path = sys.argv[1]
t = {k: v.astype(np.float64) for k, v in load_file(path).items()}
with safe_open(path, framework="numpy") as f:
    spec = json.loads(f.metadata()["architecture"])
acts = {"relu": lambda z: np.maximum(z, 0), "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
        "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
x = np.array(json.loads(sys.argv[2]), dtype=np.float64)
if spec["kind"] == "cnn":
    H, W, C = spec["input"]
    a = x.reshape(-1, H, W, C).transpose(0, 3, 1, 2)          # NHWC -> NCHW
    for i in range(len(spec["blocks"])):
        w, b = t[f"conv{i}.weight"], t[f"conv{i}.bias"]
        n, c, h, wd = a.shape
        p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
        z = np.zeros((n, w.shape[0], h, wd)) + b[None, :, None, None]
        for ky in range(3):
            for kx in range(3):
                z += np.einsum("nchw,oc->nohw", p[:, :, ky:ky + h, kx:kx + wd], w[:, :, ky, kx])
        z = np.maximum(z, 0)
        h2, w2 = h // 2, wd // 2
        a = z[:, :, :2 * h2, :2 * w2].reshape(n, -1, h2, 2, w2, 2).max(axis=(3, 5))
    a = a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1)        # flatten in HWC order
else:
    a = x.reshape(-1, spec["input_len"])
L = len(spec["hidden"]) + 1
for i in range(L):
    a = a @ t[f"dense{i}.weight"].T + t[f"dense{i}.bias"]
    if i < L - 1:
        a = acts[spec["activation"]](a)
a = a - a.max(axis=1, keepdims=True)
p = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
print(" ".join(repr(float(v)) for v in p.ravel()))
"#;

    /// Loads our file with `safetensors.numpy` in Python and compares a
    /// numpy forward pass to ours. Fails (never skips) without Python deps.
    #[test]
    fn interop_numpy_forward_matches() {
        const HINT: &str = "this test needs python3 with numpy and safetensors: pip install safetensors numpy";
        for (name, model) in [
            ("mlp", mlp(vec![16, 8], Activation::Relu, 11)),
            ("mlp-tanh", mlp(vec![6], Activation::Tanh, 12)),
            ("cnn", cnn(13)),
        ] {
            let path = tmp_path(&format!("interop-{name}"));
            save(&path, &model, &meta()).expect("writable temp dir");
            let (x, _) = random_data(3, model.input_len(), 3, 21);
            let probs = model.forward(&x, 3).expect("valid batch");
            let x_json = serde_json::to_string(&x).expect("finite floats");
            let out = Command::new("python3")
                .arg("-c")
                .arg(PY_FORWARD)
                .arg(&path)
                .arg(&x_json)
                .output();
            std::fs::remove_file(&path).ok();
            let out = match out {
                Ok(o) => o,
                Err(e) => panic!("could not run python3 ({e}); {HINT}"),
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "python failed: {stderr}\n{HINT}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let py: Vec<f64> = stdout
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            println!("{name}: rust  {probs:?}");
            println!("{name}: numpy {py:?}");
            assert_eq!(py.len(), probs.len(), "{name}: python printed {stdout:?}");
            for (r, p) in probs.iter().zip(&py) {
                assert!((f64::from(*r) - p).abs() < 1e-5, "{name}: rust {r} vs numpy {p}");
            }
        }
    }
}
