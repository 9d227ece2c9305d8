//! The closed set of stage kinds: [`Params`], the enum the plan and the executor `match` on,
//! and the one table from a kind's name to its file.

use crate::source::diag::Diagnostic;
use crate::source::fields::Fields;
use crate::stage::Kind;
use crate::stage::{evaluate, ingest, mean_subtract, normalize, resize, split, train, validate};

/// Every stage kind this version runs, in pipeline order.
pub const KINDS: &[&str] = &[
    "ingest",
    "split",
    "resize",
    "mean_subtract",
    "normalize",
    "validate",
    "train",
    "evaluate",
];

/// The typed params of one stage.
#[derive(Clone, Debug)]
pub enum Params {
    Ingest(ingest::Ingest),
    Split(split::Split),
    Resize(resize::Resize),
    MeanSubtract(mean_subtract::MeanSubtract),
    Normalize(normalize::Normalize),
    Validate(validate::Validate),
    Train(train::Train),
    Evaluate(evaluate::Evaluate),
}

macro_rules! dispatch {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            Params::Ingest($p) => $e,
            Params::Split($p) => $e,
            Params::Resize($p) => $e,
            Params::MeanSubtract($p) => $e,
            Params::Normalize($p) => $e,
            Params::Validate($p) => $e,
            Params::Train($p) => $e,
            Params::Evaluate($p) => $e,
        }
    };
}

fn kind_of<K: Kind>(_: &K) -> &'static str {
    K::KIND
}

fn version_of<K: Kind>(_: &K) -> u32 {
    K::VERSION
}

impl Params {
    pub fn kind(&self) -> &'static str {
        dispatch!(self, p => kind_of(p))
    }
    pub fn version(&self) -> u32 {
        dispatch!(self, p => version_of(p))
    }
    pub fn to_json(&self) -> serde_json::Value {
        dispatch!(self, p => p.to_json())
    }
    pub fn fits_statistics(&self) -> bool {
        dispatch!(self, p => p.fits_statistics())
    }
    /// How many inputs the kind takes.
    /// Whether the artifact is a report, the data flowing on unchanged from the input.
    pub fn is_report(&self) -> bool {
        matches!(self, Params::Validate(_) | Params::Evaluate(_))
    }

    /// How many inputs the kind takes: at least, at most.
    pub fn input_count(&self) -> (usize, usize) {
        match self {
            Params::Ingest(_) => (0, 0),
            Params::Evaluate(_) => (1, 2),
            _ => (1, 1),
        }
    }
}

/// Reads the params of a stage of `kind` (which must be one of [`KINDS`]).
pub fn parse_params(kind: &str, fields: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Params> {
    match kind {
        ingest::Ingest::KIND => ingest::Ingest::parse(fields, diags).map(Params::Ingest),
        split::Split::KIND => split::Split::parse(fields, diags).map(Params::Split),
        resize::Resize::KIND => resize::Resize::parse(fields, diags).map(Params::Resize),
        mean_subtract::MeanSubtract::KIND => {
            mean_subtract::MeanSubtract::parse(fields, diags).map(Params::MeanSubtract)
        }
        normalize::Normalize::KIND => normalize::Normalize::parse(fields, diags).map(Params::Normalize),
        validate::Validate::KIND => validate::Validate::parse(fields, diags).map(Params::Validate),
        train::Train::KIND => train::Train::parse(fields, diags).map(Params::Train),
        evaluate::Evaluate::KIND => evaluate::Evaluate::parse(fields, diags).map(Params::Evaluate),
        _ => None,
    }
}

/// The params a kind accepts, for "unknown param" suggestions.
pub fn param_names(kind: &str) -> &'static [&'static str] {
    match kind {
        ingest::Ingest::KIND => ingest::Ingest::PARAMS,
        split::Split::KIND => split::Split::PARAMS,
        resize::Resize::KIND => resize::Resize::PARAMS,
        mean_subtract::MeanSubtract::KIND => mean_subtract::MeanSubtract::PARAMS,
        normalize::Normalize::KIND => normalize::Normalize::PARAMS,
        validate::Validate::KIND => validate::Validate::PARAMS,
        train::Train::KIND => train::Train::PARAMS,
        evaluate::Evaluate::KIND => evaluate::Evaluate::PARAMS,
        _ => &[],
    }
}
