//! How a command fails, and the exit code each failure maps to.
//!
//! Exit codes: 0 ok; 1 the pipeline ran and a stage failed (bad image, changed file, ...);
//! 2 usage or spec error (nothing ran).

use std::fmt;

#[derive(Debug)]
pub enum Failure {
    /// The pipeline file has problems (already rendered with positions).
    Spec(String),
    /// The command line is wrong.
    Usage(String),
    /// A stage failed while running.
    Pipeline(String),
    /// `audit` or `cache verify` found problems (already printed).
    Inconsistent,
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Pipeline(_) | Failure::Inconsistent => 1,
            Failure::Spec(_) | Failure::Usage(_) => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Spec(text) => write!(f, "{}", text.trim_end()),
            Failure::Usage(text) => write!(f, "error: {text}"),
            Failure::Pipeline(text) => write!(f, "error: {text}"),
            Failure::Inconsistent => write!(f, "error: inconsistencies found (see above)"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<anyhow::Error> for Failure {
    /// The one conversion of a command's error: a [`Failure`] raised by the command line keeps
    /// its kind; anything else is a failure of the pipeline's work, printed with its causes.
    fn from(err: anyhow::Error) -> Self {
        match err.downcast::<Failure>() {
            Ok(f) => f,
            Err(err) if err.is::<crate::cache::remote::Unusable>() => Failure::Usage(format!("{err:#}")),
            Err(err) => Failure::Pipeline(format!("{err:#}")),
        }
    }
}

/// Whether the command failed only because its reader went away (`pipeline … | head`): the
/// output was not wanted any more, which is no error to report.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
