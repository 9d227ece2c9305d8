//! `pipeline._native`: the bindings under the `pipeline` Python package. They only move bytes
//! between Python and the library's [`pipeline::embed`]; the Python side (`pipeline/`) turns
//! them into NumPy arrays without copying (the [`Buffer`] and [`Row`] objects here hand out
//! their memory through the buffer protocol).
//!
//! Every error is the library's message as a `pipeline.PipelineError`; nothing here panics on
//! what Python passes in (a panic would reach Python as a `PanicException`).

use std::ffi::{c_int, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use pipeline::embed::{self, Image};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyTuple};

create_exception!(
    _native,
    PipelineError,
    PyException,
    "A pipeline file, a stage, an image or the cache could not be used; the message is the CLI's."
);

/// Runs `f` without the GIL, on the process's thread pool ([`embed::on_pool`]: a forked
/// `DataLoader` worker gets one of its own).
fn work<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| embed::on_pool(f))
}

fn err(e: anyhow::Error) -> PyErr {
    PipelineError::new_err(format!("{e:#}"))
}

/// Fills `view` with `len` read-only bytes at `buf`, owned by `owner`.
///
/// # Safety
/// `view` comes from Python's buffer protocol; `buf..buf+len` must stay valid and unchanged
/// as long as `owner` lives.
unsafe fn fill(
    view: *mut ffi::Py_buffer,
    flags: c_int,
    buf: *const u8,
    len: usize,
    owner: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let len = isize::try_from(len).map_err(|_| PyTypeError::new_err("buffer too large"))?;
    // SAFETY: as the caller promised; PyBuffer_FillInfo takes a reference to `owner` and
    // fails (with a Python exception set) when a writable buffer is asked for.
    let rc = unsafe { ffi::PyBuffer_FillInfo(view, owner.as_ptr(), buf as *mut c_void, len, 1, flags) };
    if rc == 0 { Ok(()) } else { Err(PyErr::fetch(owner.py())) }
}

/// `f32` values made in Rust (native byte order), read by NumPy in place.
#[pyclass(frozen, module = "pipeline._native")]
struct Buffer {
    values: Vec<f32>,
}

impl Buffer {
    fn of_f32(values: Vec<f32>) -> Buffer {
        Buffer { values }
    }
}

#[pymethods]
impl Buffer {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let values = &slf.get().values;
        let (ptr, len) = (values.as_ptr().cast::<u8>(), std::mem::size_of_val(values.as_slice()));
        // SAFETY: the values belong to `slf`, which is frozen: they never change or move.
        unsafe { fill(view, flags, ptr, len, slf.as_any()) }
    }

    /// The number of bytes.
    fn __len__(&self) -> usize {
        std::mem::size_of_val(self.values.as_slice())
    }
}

/// One row of stored `u8` pixels, in the memory-mapped artifact itself.
#[pyclass(frozen, module = "pipeline._native")]
struct Row {
    data: Arc<embed::Dataset>,
    k: usize,
}

#[pymethods]
impl Row {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let row = slf.get();
        let bytes = row.data.stored(row.k).map_err(err)?;
        // SAFETY: the mapping lives as long as the `Dataset` this object holds; an artifact
        // is never written in place.
        unsafe { fill(view, flags, bytes.as_ptr(), bytes.len(), slf.as_any()) }
    }
}

/// What Python passes as one image: a path (`str` or `os.PathLike`), encoded bytes
/// (`bytes`, `bytearray`), or decoded pixels as `(rgb_bytes, width, height)`.
fn image(item: &Bound<'_, PyAny>, k: usize) -> PyResult<Image> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(Image::Encoded(b.as_bytes().to_vec()));
    }
    if let Ok(b) = item.cast::<PyByteArray>() {
        return Ok(Image::Encoded(b.to_vec()));
    }
    if let Ok(t) = item.cast::<PyTuple>() {
        let (rgb, w, h): (Vec<u8>, u32, u32) = t.extract().map_err(|_| {
            PyTypeError::new_err(format!("image {k}: decoded pixels come as (rgb_bytes, width, height)"))
        })?;
        return Ok(Image::Decoded(rgb, w, h));
    }
    if let Ok(p) = item.extract::<PathBuf>() {
        return Ok(Image::Path(p));
    }
    Err(PyTypeError::new_err(format!(
        "image {k}: expected a path, bytes, a PIL.Image or a uint8 NumPy array, got {}",
        item.get_type().name()?
    )))
}

fn images(items: &Bound<'_, PyAny>) -> PyResult<Vec<Image>> {
    items
        .try_iter()?
        .enumerate()
        .map(|(k, item)| image(&item?, k))
        .collect()
}

/// A pipeline file, loaded and checked as the CLI loads it.
#[pyclass(frozen, module = "pipeline._native")]
struct Project {
    inner: embed::Project,
}

#[pymethods]
impl Project {
    #[new]
    #[pyo3(signature = (file, sets = Vec::new(), cache = None))]
    fn new(py: Python<'_>, file: PathBuf, sets: Vec<String>, cache: Option<String>) -> PyResult<Project> {
        let inner = work(py, || embed::Project::open(&file, &sets, cache.as_deref())).map_err(err)?;
        Ok(Project { inner })
    }

    /// `[(name, kind)]` of every stage, in file order.
    fn stages(&self) -> Vec<(String, &'static str)> {
        self.inner.stages()
    }

    /// The name of the pixel stage `stage` is or stands for (the default when `None`).
    #[pyo3(signature = (stage = None))]
    fn pixel_stage(&self, stage: Option<&str>) -> PyResult<String> {
        let i = self.inner.pixel_stage(stage).map_err(err)?;
        Ok(self.inner.stage_name(i).to_string())
    }

    #[pyo3(signature = (stage = None))]
    fn frozen(&self, py: Python<'_>, stage: Option<String>) -> PyResult<Frozen> {
        let inner = &self.inner;
        let (name, frozen) = work(py, || {
            let i = inner.pixel_stage(stage.as_deref())?;
            Ok::<_, anyhow::Error>((inner.stage_name(i).to_string(), inner.frozen(i)?))
        })
        .map_err(err)?;
        Ok(Frozen {
            stage: name,
            inner: frozen,
        })
    }

    #[pyo3(signature = (stage = None))]
    fn predictor(&self, py: Python<'_>, stage: Option<String>) -> PyResult<Predictor> {
        let inner = work(py, || self.inner.predictor(stage.as_deref())).map_err(err)?;
        Ok(Predictor { inner })
    }

    #[pyo3(signature = (stage = None, partition = None))]
    fn dataset(&self, py: Python<'_>, stage: Option<String>, partition: Option<String>) -> PyResult<Dataset> {
        let inner = &self.inner;
        let (name, data) = work(py, || {
            let i = inner.pixel_stage(stage.as_deref())?;
            Ok::<_, anyhow::Error>((inner.stage_name(i).to_string(), inner.dataset(i, partition.as_deref())?))
        })
        .map_err(err)?;
        Ok(Dataset {
            stage: name,
            inner: Arc::new(data),
        })
    }

    /// The lineage of the dataset stage `stage` is or stands for, as JSON text.
    fn lineage(&self, py: Python<'_>, stage: String) -> PyResult<String> {
        let entries = work(py, || self.inner.lineage(&stage)).map_err(err)?;
        serde_json::to_string(&entries).map_err(|e| err(e.into()))
    }

    /// `[(stage, fingerprint)]` for the pipeline as it is now, built or not.
    fn fingerprints(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        work(py, || self.inner.fingerprints()).map_err(err)
    }
}

/// A pixel stage's frozen preprocessing.
#[pyclass(frozen, module = "pipeline._native")]
struct Frozen {
    #[pyo3(get)]
    stage: String,
    inner: embed::Frozen,
}

#[pymethods]
impl Frozen {
    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        let [h, w, c] = self.inner.shape();
        (h, w, c)
    }

    /// The values of `items` (see [`image`]), `f32` HWC rows one after another.
    fn run(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<Buffer> {
        let images = images(items)?;
        let values = work(py, || embed::transform(&self.inner, &images)).map_err(err)?;
        Ok(Buffer::of_f32(values))
    }
}

/// A trained model with its frozen preprocessing, as `pipeline predict` loads it.
#[pyclass(frozen, module = "pipeline._native")]
struct Predictor {
    inner: embed::Predictor,
}

#[pymethods]
impl Predictor {
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.classes.clone()
    }

    #[getter]
    fn fingerprint(&self) -> String {
        self.inner.fingerprint.clone()
    }

    #[getter]
    fn stage(&self) -> String {
        self.inner.stage.clone()
    }

    #[getter]
    fn lineage(&self) -> Vec<(String, String)> {
        self.inner.lineage.clone()
    }

    /// Each image's probabilities (`f32`, one row of `len(classes)` per image).
    fn run(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<Buffer> {
        let images = images(items)?;
        let p = &self.inner;
        let probs = work(py, || {
            let values = embed::transform(&p.frozen, &images)?;
            let len = p.frozen.shape().iter().product::<usize>().max(1);
            let mut out = Vec::new();
            for (k, row) in values.chunks(len).enumerate() {
                let prediction = p
                    .classify_values(row)
                    .map_err(|why| anyhow::anyhow!("image {k}: {why}"))?;
                out.extend(prediction.probabilities);
            }
            Ok::<_, anyhow::Error>(out)
        })
        .map_err(err)?;
        Ok(Buffer::of_f32(probs))
    }
}

/// A stage's cached dataset, memory-mapped.
#[pyclass(frozen, module = "pipeline._native")]
struct Dataset {
    #[pyo3(get)]
    stage: String,
    inner: Arc<embed::Dataset>,
}

#[pymethods]
impl Dataset {
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        let [h, w, c] = self.inner.shape;
        (h, w, c)
    }

    /// Whether rows are the stored `u8` pixels in place (else `f32` values made per row).
    #[getter]
    fn zero_copy(&self) -> bool {
        self.inner.zero_copy
    }

    #[getter]
    fn labels(&self) -> Vec<i32> {
        self.inner.labels.clone()
    }

    #[getter]
    fn ids(&self) -> Vec<String> {
        self.inner.ids.clone()
    }

    #[getter]
    fn paths(&self) -> Vec<String> {
        self.inner.paths.clone()
    }

    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.classes.clone()
    }

    /// Row `k`'s stored pixels in place (for a `zero_copy` dataset).
    fn row(&self, k: usize) -> PyResult<Row> {
        // Checked now, so a bad row fails here rather than inside NumPy.
        self.inner.stored(k).map_err(err)?;
        Ok(Row {
            data: Arc::clone(&self.inner),
            k,
        })
    }

    /// The `f32` values of rows `ks`, one after another, made on every core.
    fn values(&self, py: Python<'_>, ks: Vec<usize>) -> PyResult<Buffer> {
        let data = &self.inner;
        let values = work(py, || data.values(&ks)).map_err(err)?;
        Ok(Buffer::of_f32(values))
    }

    /// Drops the pages read so far from the process's memory (they stay in the page cache).
    fn release_pages(&self) {
        self.inner.release_pages();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PipelineError", m.py().get_type::<PipelineError>())?;
    m.add_class::<Project>()?;
    m.add_class::<Frozen>()?;
    m.add_class::<Predictor>()?;
    m.add_class::<Dataset>()?;
    m.add_class::<Buffer>()?;
    m.add_class::<Row>()?;
    Ok(())
}
