//! Diagnostics: problems a user can fix, each pointing into the pipeline file.
//!
//! Spec parsing and planning collect every problem into a `Vec<Diagnostic>` instead of stopping
//! at the first one, then render them all at once in the style of rustc: the message, a
//! `file:line:col` locator, the offending source line with a `^` under the bad text, and a
//! `help:` line with the likely fix.

use std::fmt::Write as _;

/// A position in the pipeline file or in a `--set` argument: 1-based line and column (in
/// characters), and the width of the text to underline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub col: usize,
    pub len: usize,
    /// 0 for the pipeline file; n for the n-th `--set` argument, whose text is shown as the
    /// line `--set stage.param=value` (so `col` counts from its `-`).
    pub set: usize,
}

impl Span {
    /// A span in the pipeline file.
    pub fn at(line: usize, col: usize, len: usize) -> Span {
        Span { line, col, len, set: 0 }
    }
}

/// A `--set stage.param=value` argument as it was applied, for rendering the problems found in
/// the value it carried.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetArg {
    /// The argument's text, `stage.param=value`.
    pub text: String,
    /// The stage and param it names, when it names a stage the file has.
    pub target: Option<(String, String)>,
    /// The value in the file it replaces; `None` when the file does not set the param.
    pub replaces: Option<Span>,
}

/// The prefix a `--set` argument is shown with; spans into it count from its first character.
pub const SET_PREFIX: &str = "--set ";

/// One problem found in a pipeline file or on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Where in the file; `None` for problems that come from the command line (`--set`) or
    /// that concern the whole file.
    pub span: Option<Span>,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            span: span.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Renders this diagnostic against the file it refers to and the `--set` arguments of the
    /// command line.
    pub fn render(&self, path: &str, source: &str, sets: &[SetArg]) -> String {
        let mut out = format!("error: {}\n", self.message);
        let mut pad = " ".to_string();
        let mut note = None;
        match self.span {
            Some(span) => {
                let (line, gutter) = match span.set.checked_sub(1).and_then(|n| sets.get(n)) {
                    None => {
                        let _ = writeln!(out, "  --> {path}:{}:{}", span.line, span.col);
                        (
                            source.lines().nth(span.line.saturating_sub(1)).map(str::to_string),
                            span.line.to_string(),
                        )
                    }
                    Some(set) => {
                        let _ = writeln!(out, "  --> the command line");
                        note = set.target.as_ref().map(|(stage, param)| match set.replaces {
                            Some(r) if r.set > 0 => {
                                let earlier = sets.get(r.set - 1).map_or("", |s| s.text.as_str());
                                format!("this `--set` overrides `{param}` of stage `{stage}`, set by `--set {earlier}` before it")
                            }
                            Some(r) => {
                                let was = source.lines().nth(r.line.saturating_sub(1)).unwrap_or("").trim();
                                format!(
                                    "this `--set` overrides `{param}` of stage `{stage}`, set in {path}:{}:{} as `{was}`",
                                    r.line, r.col
                                )
                            }
                            None => format!("this `--set` adds `{param}` to stage `{stage}`; the file does not set it"),
                        });
                        let text = set.text.lines().next().unwrap_or("");
                        (Some(format!("{SET_PREFIX}{text}")), " ".to_string())
                    }
                };
                if let Some(text) = line {
                    pad = " ".repeat(gutter.len().max(1));
                    let caret_pad: String = text
                        .chars()
                        .take(span.col.saturating_sub(1))
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let _ = writeln!(out, "{pad} |");
                    let _ = writeln!(out, "{gutter} | {text}");
                    let _ = writeln!(out, "{pad} | {caret_pad}{}", "^".repeat(span.len.max(1)));
                }
            }
            None => {
                let _ = writeln!(out, "  --> {path}");
            }
        }
        if let Some(note) = note {
            let _ = writeln!(out, "{pad} = note: {note}");
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// Renders a list of diagnostics, one block each, and a closing count.
pub fn render_all(diags: &[Diagnostic], path: &str, source: &str, sets: &[SetArg]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(path, source, sets));
        out.push('\n');
    }
    let n = diags.len();
    let _ = writeln!(out, "{path}: {n} problem{} found", if n == 1 { "" } else { "s" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_bad_text() {
        let src = "stages:\n  resize:\n    sise: [32, 32]\n";
        let d = Diagnostic::new(Span::at(3, 5, 4), "unknown param `sise`").with_help("did you mean `size`?");
        let text = d.render("p.yaml", src, &[]);
        assert_eq!(
            text,
            "error: unknown param `sise`\n  --> p.yaml:3:5\n  |\n3 |     sise: [32, 32]\n  |     ^^^^\n  = help: did you mean `size`?\n"
        );
    }
}
