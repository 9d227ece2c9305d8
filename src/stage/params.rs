//! The closed set of stage kinds: [`Params`], the enum the plan and the executor `match` on,
//! and the one table from a kind's name to its file (the `kinds!` list: adding a kind is one
//! line there).

use crate::source::diag::Diagnostic;
use crate::source::fields::Fields;
use crate::stage::Kind;
use crate::stage::{evaluate, ingest, mean_subtract, normalize, resize, split, train, validate};

/// Declares the stage kinds once: [`KINDS`], the [`Params`] enum, its per-kind dispatch,
/// [`parse_params`] and [`param_names`] all come from this one list.
macro_rules! kinds {
    ($($variant:ident($ty:ty)),+ $(,)?) => {
        /// Every stage kind this version runs, in pipeline order.
        pub const KINDS: &[&str] = &[$(<$ty as Kind>::KIND),+];

        /// The typed params of one stage.
        #[derive(Clone, Debug)]
        pub enum Params {
            $($variant($ty)),+
        }

        impl Params {
            /// The kind's name, as written after `kind:`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Params::$variant(_) => <$ty as Kind>::KIND),+
                }
            }

            /// The kind's version, part of the fingerprint.
            pub fn version(&self) -> u32 {
                match self {
                    $(Params::$variant(_) => <$ty as Kind>::VERSION),+
                }
            }

            /// All params, defaults filled in, as they enter the fingerprint.
            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(Params::$variant(p) => p.to_json()),+
                }
            }

            /// Takes the pipeline's `seed` where the stage uses one and sets none; whether it did.
            pub fn inherit_seed(&mut self, seed: u64) -> bool {
                match self {
                    $(Params::$variant(p) => p.inherit_seed(seed)),+
                }
            }

            /// Whether the stage fits statistics on the data (so needs a `split` upstream).
            pub fn fits_statistics(&self) -> bool {
                match self {
                    $(Params::$variant(p) => p.fits_statistics()),+
                }
            }
        }

        /// Reads the params of a stage of `kind` (which must be one of [`KINDS`]).
        pub fn parse_params(kind: &str, fields: &mut Fields<'_>, diags: &mut Vec<Diagnostic>) -> Option<Params> {
            $(if kind == <$ty as Kind>::KIND {
                return <$ty as Kind>::parse(fields, diags).map(Params::$variant);
            })+
            None
        }

        /// The params a kind accepts, for "unknown param" suggestions.
        pub fn param_names(kind: &str) -> &'static [&'static str] {
            $(if kind == <$ty as Kind>::KIND {
                return <$ty as Kind>::PARAMS;
            })+
            &[]
        }
    };
}

kinds! {
    Ingest(ingest::Ingest),
    Split(split::Split),
    Resize(resize::Resize),
    MeanSubtract(mean_subtract::MeanSubtract),
    Normalize(normalize::Normalize),
    Validate(validate::Validate),
    Train(train::Train),
    Evaluate(evaluate::Evaluate),
}

impl Params {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_in_pipeline_order() {
        assert_eq!(
            KINDS.join(" "),
            "ingest split resize mean_subtract normalize validate train evaluate"
        );
    }

    #[test]
    fn each_kind_names_its_params_and_an_unknown_kind_none() {
        assert_eq!(param_names("resize"), resize::Resize::PARAMS);
        assert_eq!(param_names("evaluate"), ["partitions"]);
        assert!(KINDS.iter().all(|k| !param_names(k).is_empty()));
        assert!(param_names("resise").is_empty());
    }
}
