//! Shell completions as a user's bash runs them (the script `pipeline completions bash`
//! prints, sourced, its function called with the words on the line), and the man page.

use std::process::Command;

use crate::support::{BASIC, Project};

/// The candidates a bash that sourced `pipeline completions bash` offers for the last of
/// `words` (the words of the line, `pipeline` first).
fn bash_complete(p: &Project, words: &[&str]) -> Vec<String> {
    let script = p.run(&["completions", "bash"]).ok().stdout;
    p.write("completions.bash", &script);
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
    let body = format!(
        "source ./completions.bash\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_clap_complete_pipeline pipeline '{cur}' \
         '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" "),
        words.len() - 1
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(body)
        .current_dir(p.root())
        .output()
        .expect("bash must be installed");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_flags_and_the_pipeline_files_own_names() {
    let p = Project::new();
    p.pipeline(BASIC);
    assert_eq!(bash_complete(&p, &["pipeline", "ru"]), ["run"]);
    assert_eq!(bash_complete(&p, &["pipeline", "completions", "f"]), ["fish"]);
    let flags = bash_complete(&p, &["pipeline", "run", "pipeline.yaml", "--"]);
    for flag in ["--stage", "--force", "--set", "--jobs"] {
        assert!(flags.iter().any(|f| f == flag), "{flags:?}");
    }
    assert_eq!(
        bash_complete(&p, &["pipeline", "run", "pipeline.yaml", "--stage", ""]),
        ["ingest", "split", "resize", "mean_subtract", "normalize"]
    );
    assert_eq!(
        bash_complete(&p, &["pipeline", "status", "pipeline.yaml", "--set", "n"]),
        ["normalize."]
    );
    let params = bash_complete(&p, &["pipeline", "run", "pipeline.yaml", "--set", "resize."]);
    assert!(params.iter().any(|c| c == "resize.size="), "{params:?}");
    assert!(params.iter().all(|c| c.starts_with("resize.")), "{params:?}");
    assert_eq!(
        bash_complete(&p, &["pipeline", "diagnose", "pipeline.yaml", "--check", "l"]),
        ["lr_range", "learning_curve"]
    );
}

#[test]
fn completion_without_a_readable_pipeline_offers_nothing_and_does_not_fail() {
    let p = Project::new();
    assert!(bash_complete(&p, &["pipeline", "run", "missing.yaml", "--stage", ""]).is_empty());
    p.write("broken.yaml", "name: [unclosed\n");
    assert!(bash_complete(&p, &["pipeline", "run", "broken.yaml", "--stage", ""]).is_empty());
}

#[test]
fn every_shell_gets_a_registration_script() {
    let p = Project::new();
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        let out = p.run(&["completions", shell]).ok();
        assert_contains!(out.stdout, env!("CARGO_BIN_EXE_pipeline"));
    }
    let bad = p.run(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2);
    assert_contains!(bad.stderr, "possible values: bash, elvish, fish, powershell, zsh");
}

#[test]
fn the_man_page_documents_every_command() {
    let p = Project::new();
    let page = p.run(&["man"]).ok().stdout;
    assert!(
        page.starts_with(".ie"),
        "roff expected: {}",
        &page[..page.len().min(200)]
    );
    assert_contains!(page, ".TH pipeline 1");
    for command in ["run", "status", "audit", "diagnose", "completions"] {
        assert_contains!(page, &format!("pipeline\\-{command}"));
    }
    p.run(&["man", "--dir", "man"]).ok();
    for page in ["pipeline.1", "pipeline-run.1", "pipeline-completions.1"] {
        assert!(p.path("man").join(page).is_file(), "{page} must be written");
    }
}
