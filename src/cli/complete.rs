//! Shell completions and the man page. Completion is clap's dynamic engine: the script a
//! shell sources (`pipeline completions SHELL`, or `COMPLETE=SHELL pipeline`) calls the
//! binary at every TAB, and the values of flags come from [`crate::cli::values`].

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::env::Shells;

use crate::cli::args::{Cli, Shell};

/// The environment variable that turns a run of the binary into a completion request.
pub const VAR: &str = "COMPLETE";

/// Answers a completion request and exits, when the shell's script made this run one
/// (`COMPLETE` is set); otherwise returns at once. Call before anything writes to stdout.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .complete();
}

/// Writes the script that registers completions for `shell`.
pub fn write_registration(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let shells = Shells::builtins();
    let completer = shells
        .completer(shell.name())
        .with_context(|| format!("no completion support for {}", shell.name()))?;
    // The binary the script calls: as it was invoked when that is a path, so a build that is
    // not on PATH completes too; else found on PATH at completion time.
    let argv0 = PathBuf::from(std::env::args_os().next().unwrap_or_else(|| OsString::from("pipeline")));
    let bin = if argv0.components().count() > 1 {
        std::env::current_dir().map_or(argv0.clone(), |d| d.join(&argv0))
    } else {
        argv0
    };
    completer.write_registration(VAR, "pipeline", "pipeline", &bin.to_string_lossy(), out)?;
    Ok(())
}

/// Writes the man page: `pipeline(1)` to `out`, or with `dir` one page per command into it.
pub fn write_man(dir: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(out)?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).with_context(|| format!("cannot write into {}", dir.display()))?;
            writeln!(out, "wrote the man pages into {}", dir.display())?;
        }
    }
    Ok(())
}
