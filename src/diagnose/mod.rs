//! `pipeline diagnose FILE`: why does the classifier predict one class?
//!
//! Runs the usual checklist on the user's own pipeline — its cached data (nothing is
//! preprocessed again), its `train` stage's model, optimizer and hyperparameters — each check
//! on a short, seeded budget, then ranks what it found into a verdict with concrete changes,
//! each tied to its evidence. The checks live in [`checks`]; the short training runs they are
//! made of in [`probe`]; the learning-rate range test's arithmetic in [`lr_range`]; `--verify`,
//! which tries the top change for real, in [`verify`].

pub mod checks;
pub mod diagnosis;
pub mod lr_range;
pub mod probe;
pub mod verify;

use serde::Serialize;

/// What a finding blames, most fundamental first: the verdict ranks by this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    DataErrors,
    InputScale,
    SymmetricWeights,
    LearningRateTooHigh,
    LearningRateTooLow,
    L2TooStrong,
    DeadUnits,
    Initialization,
    CannotFit,
    /// A wider model memorizes the rows the configured one cannot.
    ModelTooSmall,
    /// The model fits small training sets, but held-out error stays at chance at every size.
    LabelsWithoutSignal,
    NotUsingInputs,
    TooFewEpochs,
    Underfitting,
    Overfitting,
    MoreDataHelps,
    /// The seed's symptom: every output near 1/K (0.50 and 0.45 for two classes), though the
    /// predictions are not all one class; seen in the training history.
    Hovering,
    /// The symptom itself, seen in the training history.
    Collapsed,
}

impl Cause {
    pub fn title(self) -> &'static str {
        match self {
            Cause::DataErrors => "the data fails validation",
            Cause::InputScale => "the input scale",
            Cause::SymmetricWeights => "symmetric weights",
            Cause::LearningRateTooHigh => "the learning rate is too high",
            Cause::LearningRateTooLow => "the learning rate is too low",
            Cause::L2TooStrong => "the L2 penalty is too strong",
            Cause::DeadUnits => "dead ReLU units",
            Cause::Initialization => "the weight initialization",
            Cause::CannotFit => "the model cannot fit a handful of examples",
            Cause::ModelTooSmall => "the model is too small to fit a handful of examples",
            Cause::LabelsWithoutSignal => "the labels carry no signal the images show",
            Cause::NotUsingInputs => "the model does not use its inputs",
            Cause::TooFewEpochs => "too few epochs",
            Cause::Underfitting => "underfitting",
            Cause::Overfitting => "overfitting",
            Cause::MoreDataHelps => "more data helps",
            Cause::Hovering => "the trained model's probabilities hover near chance",
            Cause::Collapsed => "the trained model predicts one class",
        }
    }

    /// The change to make when no check gave a concrete one; `first` when nothing is ranked
    /// above this cause.
    pub fn default_change(self, first: bool) -> &'static str {
        match self {
            Cause::LearningRateTooHigh => "lower the learning rate (`--check lr_range` suggests a value)",
            Cause::LearningRateTooLow => "raise the learning rate (`--check lr_range` suggests a value)",
            Cause::NotUsingInputs | Cause::Hovering | Cause::Collapsed if !first => "fix the causes ranked above",
            Cause::LabelsWithoutSignal => {
                "check where the labels come from (`pipeline audit FILE` lists each image's label and its \
                 source: a shuffled CSV, a wrong `labels:` rule or a folder of mixed classes); no setting of \
                 `train` fixes labels that do not belong to their images"
            }
            Cause::NotUsingInputs => {
                "check that the labels belong to the images (`pipeline audit FILE` shows where each label comes \
                 from), then try the learning rate `--check lr_range` suggests"
            }
            Cause::Hovering | Cause::Collapsed => {
                "run every check (`pipeline diagnose FILE` without `--check`) to find its cause"
            }
            _ => "",
        }
    }

    /// Whether training is broken (as opposed to merely improvable).
    pub fn blocking(self) -> bool {
        self <= Cause::NotUsingInputs || self >= Cause::Hovering
    }
}

/// One piece of evidence against the pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub cause: Cause,
    pub check: &'static str,
    pub evidence: String,
    /// A concrete change to try (`--set train.lr=0.0001`, a YAML edit).
    pub change: String,
    /// Whether training is broken by it (usually the cause's [`Cause::blocking`]).
    pub blocking: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Finding,
    Skipped,
}

/// The outcome of one check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub status: Status,
    /// One line: what was measured.
    pub summary: String,
    pub findings: Vec<Finding>,
    /// Causes this check would have found and did not.
    pub ruled_out: Vec<Cause>,
    /// The measurements, for `--json` and plots.
    pub data: serde_json::Value,
    pub seconds: f64,
}
