//! `pipeline serve`: a real HTTP client (Python's http.client, tests/python/serve_client.py)
//! gets `predict`'s probabilities for the same images, concurrently, raw and multipart; bad
//! input gets a 4xx and the server keeps serving; SIGTERM stops it gracefully.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::{Project, TRAIN_DATA};

const MLP: &str = "  train:\n    kind: train\n    model: mlp\n    hidden: [8]\n    epochs: 3\n    lr: 0.01\n    \
                   batch_size: 16\n";

#[test]
fn serve_answers_what_predict_answers_and_stops_on_sigterm() {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MLP}"));
    p.run(&["run", "pipeline.yaml"]).ok();
    let images: Vec<String> = (0..30)
        .flat_map(|i| [format!("images/cat.{i}.png"), format!("images/dog.{i}.png")])
        .collect();
    let mut args = vec!["predict", "pipeline.yaml", "--json"];
    args.extend(images.iter().map(String::as_str));
    let expected = p.run(&args).ok().stdout;
    p.write("expected.json", &expected);

    let mut server = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["serve", "pipeline.yaml", "--addr", "127.0.0.1:0", "--workers", "2"])
        .args(["--max-body", "2000000"])
        .current_dir(p.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line when listening").unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first}"))
        .to_string();
    let mut client_args = vec![url.as_str(), "expected.json"];
    client_args.extend(images.iter().map(String::as_str));
    let client = Command::new("python3")
        .arg(format!("{}/tests/python/serve_client.py", env!("CARGO_MANIFEST_DIR")))
        .args(&client_args)
        .current_dir(p.root())
        .output()
        .unwrap();
    // SIGTERM: the server answers what it has and exits 0.
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().unwrap();
    assert!(
        client.status.success(),
        "client: {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    assert_contains!(String::from_utf8_lossy(&client.stdout), "\"answered\": 120");
    assert!(status.success(), "serve must exit 0 on SIGTERM: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_contains!(rest.join("\n"), "stopped");
}

#[test]
fn serve_without_a_built_model_says_how_to_build_it() {
    let p = Project::new();
    p.learnable_images(4).pipeline(&format!("{TRAIN_DATA}{MLP}"));
    let out = p.run(&["serve", "pipeline.yaml", "--addr", "127.0.0.1:0"]);
    assert_eq!(out.code, 1);
    assert_contains!(out.stderr, "run `pipeline run pipeline.yaml` first");
}
