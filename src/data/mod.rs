//! The data layer: the dataset artifact format ([`dataset`]) and its [`lineage`], image
//! decoding ([`decode`], with the marker and chunk walks that find truncated JPEGs and skip
//! what libjpeg and Pillow skip: [`jpeg_markers`], [`png_chunks`]), hashing ([`hash`]), checking artifacts as they are read
//! ([`integrity`]), files as the cache sees them ([`file`](mod@file)), the folder walk of
//! `ingest` ([`walk`]), the `.npy` codec ([`npy`]) and the fault hook that tests failures of
//! writes ([`fault`]). It never calls up into the stages: what a reader needs to know of a
//! stage (a view's steps) lives here.

pub mod dataset;
pub mod decode;
pub mod fault;
pub mod file;
pub mod hash;
pub mod integrity;
pub mod jpeg_markers;
pub mod lineage;
// The .npy writer is exercised against NumPy in its tests; the binary only reads .npy so far.
#[allow(dead_code)]
pub mod npy;
pub mod png_chunks;
pub mod walk;
