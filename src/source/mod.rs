//! The pipeline file as text: YAML with the position of every node ([`yaml`]), the
//! diagnostics that point into it ([`diag`]), "did you mean" suggestions ([`suggest`]) and
//! typed readers of a mapping's fields ([`fields`]). The bottom layer: it knows nothing of
//! stages or data.

pub mod diag;
pub mod fields;
pub mod suggest;
pub mod yaml;
