//! A shared cache on object storage: a real S3 server (`moto_server`, started here on
//! 127.0.0.1 and stopped with the test) and a folder (`file://`), with projects standing for
//! machines that each have their own local `cache/`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Project, Run, TRAIN_DATA};

pub const MODEL: &str = "  train:\n    kind: train\n    model: mlp\n    hidden: [8]\n    epochs: 3\n    lr: 0.01\n    \
                     batch_size: 16\n  evaluate:\n    kind: evaluate\n    input: train\n";

/// The secret the servers are given: it must never show up in output or in a cache.
pub const SECRET: &str = "s3cr3t-never-printed";

/// `moto_server` on a free port of 127.0.0.1, with a bucket; killed (by its PID) on drop.
pub struct S3 {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3 {
    pub fn start(bucket: &str) -> S3 {
        S3::start_with(bucket, &[])
    }

    /// A server that checks credentials against its own users (it has none: every key is
    /// refused), once the bucket is made.
    fn checking_credentials(bucket: &str) -> S3 {
        S3::start_with(bucket, &[("INITIAL_NO_AUTH_ACTION_COUNT", "1")])
    }

    fn start_with(bucket: &str, env: &[(&str, &str)]) -> S3 {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("moto_server is not installed: scripts/test.sh installs it (pip install 'moto[server]')");
        let s3 = S3 {
            child,
            port,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s3.create_bucket(bucket);
        s3
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn create_bucket(&self, bucket: &str) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "bucket not created: {answer}");
    }

    /// Sends one unsigned request (this server does not check signatures) and returns the
    /// answer's status line and body.
    fn request(&self, method: &str, target: &str, body: &[u8]) -> (String, String) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            conn,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(body).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        let status = answer.lines().next().unwrap_or_default().to_string();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        (status, body)
    }

    /// Writes an object as another tool would (no record, no checks).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let (status, _) = self.request("PUT", &format!("/{bucket}/{key}"), bytes);
        assert!(status.starts_with("HTTP/1.1 200"), "{key} not written: {status}");
    }

    /// The keys of the objects under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (_, body) = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&max-keys=1000&prefix={prefix}"),
            b"",
        );
        body.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// How many uploads in parts are open (begun, neither finished nor aborted).
    pub fn open_uploads(&self, bucket: &str) -> usize {
        let (_, body) = self.request("GET", &format!("/{bucket}?uploads"), b"");
        body.matches("<UploadId>").count()
    }

    /// The requests the server has answered so far (its access log).
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" HTTP/1.1\" "))
            .count()
    }

    /// The answers to record creates (`PUT …/artifacts/<fingerprint>.json`), by status.
    fn record_creates(&self) -> (usize, usize) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let creates: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "\"PUT")
                    .nth(1)
                    .is_some_and(|key| {
                        key.rsplit('/')
                            .next()
                            .and_then(|n| n.strip_suffix(".json"))
                            .is_some_and(|fp| fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()))
                    })
            })
            .collect();
        let with = |status: &str| {
            creates
                .iter()
                .filter(|l| l.contains(&format!("HTTP/1.1\" {status} ")))
                .count()
        };
        (with("200"), with("412"))
    }

    /// What the AWS variables must say for a run to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        aws_env(&self.endpoint())
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "pipeline-tests".to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

/// A project ("a machine") with the images and pipeline every machine here shares.
pub fn machine() -> Project {
    let p = Project::new();
    p.learnable_images(30).pipeline(&format!("{TRAIN_DATA}{MODEL}"));
    p
}

pub fn run(p: &Project, cache: &str, env: &[(&'static str, String)]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.run_env(&["run", "pipeline.yaml", "--cache", cache], &env)
}

pub const STAGES: [&str; 8] = [
    "ingest",
    "split",
    "resize",
    "mean_subtract",
    "normalize",
    "validate",
    "train",
    "evaluate",
];

/// Every file of the local cache's artifacts folder, by name, with a hash of its bytes.
pub fn artifacts(p: &Project) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(p.path("cache/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, blake3::hash(&std::fs::read(&path).unwrap()).to_hex().to_string())
        })
        .collect();
    out.sort();
    out
}

/// [`artifacts`] but the records (which hold the time each was made).
pub fn data(p: &Project) -> Vec<(String, String)> {
    artifacts(p)
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".json") || n.ends_with(".report.json"))
        .collect()
}

/// Asserts that no file under `dir` holds the secret.
fn no_secret_in(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            no_secret_in(&path);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{} holds the secret key",
                path.display()
            );
        }
    }
}

#[test]
fn a_second_machine_copies_every_stage_from_s3_and_recomputes_nothing() {
    let s3 = S3::start("team");
    let env = s3.env();
    let first = machine();
    let made = run(&first, "s3://team/cats", &env).ok();
    assert!(STAGES.iter().all(|s| made.ran(s)), "{}", made.stdout);

    // Another machine: the same files, an empty local cache.
    let second = machine();
    // `status` only looks: every stage fresh, by each record and its data object's size,
    // and nothing copied.
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let before = s3.requests();
    let status = second
        .run_env(&["status", "pipeline.yaml", "--cache", "s3://team/cats"], &env_ref)
        .ok();
    for stage in STAGES {
        assert_contains!(status.line(stage), "fresh", "{}", status.stdout);
    }
    assert_eq!(
        s3.requests() - before,
        1 + 2 * STAGES.len(),
        "a listing, then a record and a look per stage"
    );
    assert!(artifacts(&second).is_empty(), "status copied {:?}", artifacts(&second));
    let before = s3.requests();
    let copied = run(&second, "s3://team/cats", &env).ok();
    assert!(STAGES.iter().all(|s| copied.cached(s)), "{}", copied.stdout);
    // Same fingerprints, same bytes: the local copies are the first machine's artifacts.
    assert_eq!(artifacts(&second), artifacts(&first));
    // A listing (the check that the bucket answers), one of finished shards to merge (none),
    // then per stage its record and data.
    assert_eq!(s3.requests() - before, 2 + 2 * STAGES.len());

    // Warm, everything local: the listing and one look per stage that the shared cache has it.
    let before = s3.requests();
    let warm = run(&second, "s3://team/cats", &env).ok();
    assert!(STAGES.iter().all(|s| warm.cached(s)), "{}", warm.stdout);
    let warm_requests = s3.requests() - before;
    assert!(warm_requests <= 20, "a warm run sent {warm_requests} requests");

    // What reads the cache copies too: `export` on a third machine, nothing run there.
    let third = machine();
    third
        .run_env(
            &[
                "export",
                "pipeline.yaml",
                "--stage",
                "resize",
                "-o",
                "resize.arrow",
                "--cache",
                "s3://team/cats",
            ],
            &env_ref,
        )
        .ok();
    assert_eq!(
        std::fs::read(third.path("resize.arrow")).unwrap(),
        std::fs::read(first.artifact_path("m", "resize")).unwrap()
    );

    for p in [&first, &second, &third] {
        no_secret_in(&p.path("cache"));
    }
    for r in [&made, &copied, &warm] {
        assert_not_contains!(r.stdout, SECRET);
        assert_not_contains!(r.stderr, SECRET);
    }
}

#[test]
fn machines_racing_on_one_fingerprint_both_finish_with_the_same_artifacts() {
    let s3 = S3::start("race");
    let env = s3.env();
    let machines = [machine(), machine(), machine()];
    let spawn = |p: &Project| {
        Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["run", "pipeline.yaml", "--cache", "s3://race/x"])
            .current_dir(p.root())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<Child> = machines.iter().map(spawn).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each fingerprint's record was created once: a create that lost got 412 and reused it.
    let (created, refused) = s3.record_creates();
    assert_eq!(created, STAGES.len(), "{refused} creates were refused");
    // Preprocessing is bit-reproducible: every machine holds the same data files.
    let arrow = |p: &Project| -> Vec<(String, String)> {
        artifacts(p)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".arrow"))
            .collect()
    };
    assert_eq!(arrow(&machines[0]), arrow(&machines[1]));
    assert_eq!(arrow(&machines[0]), arrow(&machines[2]));
    // Whoever won each create, a third machine copies a consistent set and computes nothing.
    let c = machine();
    let copied = run(&c, "s3://race/x", &env).ok();
    assert!(STAGES.iter().all(|s| copied.cached(s)), "{}", copied.stdout);
    c.run(&["cache", "verify", "pipeline.yaml"]).ok();
}

#[test]
fn a_damaged_copy_in_the_shared_cache_is_never_used_and_is_replaced() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("file://{}", shared.path().display());
    let first = machine();
    run(&first, &url, &[]).ok();
    let resize = first.artifact_path("m", "resize");
    let fingerprint = resize.file_stem().unwrap().to_string_lossy().into_owned();
    // The shared copy of resize's data gets one flipped byte; normalize's loses its tail.
    let object = |fp: &str| -> PathBuf {
        std::fs::read_dir(shared.path().join("artifacts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(fp) && name.ends_with(".arrow")
            })
            .unwrap()
    };
    let resize_object = object(&fingerprint);
    let mut bytes = std::fs::read(&resize_object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&resize_object, &bytes).unwrap();
    let normalize = first.artifact_path("m", "normalize");
    let normalize_object = object(&normalize.file_stem().unwrap().to_string_lossy());
    let len = std::fs::metadata(&normalize_object).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&normalize_object)
        .unwrap()
        .set_len(len - 100)
        .unwrap();

    let second = machine();
    let rerun = run(&second, &url, &[]).ok();
    for stage in ["resize", "normalize"] {
        assert!(rerun.ran(stage), "{}", rerun.stdout);
        assert_contains!(rerun.line(stage), "its copy in the shared cache");
    }
    assert_contains!(rerun.line("resize"), "does not match the recorded BLAKE3 checksum");
    assert_contains!(rerun.line("normalize"), "bytes, the record says");
    assert!(rerun.cached("ingest") && rerun.cached("train"), "{}", rerun.stdout);
    // Recomputed to the same bytes, and published again in place of the damaged copies.
    assert_eq!(
        std::fs::read(second.artifact_path("m", "resize")).unwrap(),
        std::fs::read(&resize).unwrap()
    );
    let third = machine();
    let copied = run(&third, &url, &[]).ok();
    assert!(STAGES.iter().all(|s| copied.cached(s)), "{}", copied.stdout);
    assert_eq!(data(&third), data(&first));
}

#[test]
fn an_unusable_shared_cache_stops_before_any_work_and_loses_nothing() {
    let p = machine();
    p.run(&["run", "pipeline.yaml"]).ok();

    // Nothing listens there: bounded retries, then the endpoint and its variable are named.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let down = run(&p, "s3://team/x", &aws_env(&nobody));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(down.code, 2, "{}", down.stderr);
    assert_contains!(down.stderr, &format!("{nobody} (set by AWS_ENDPOINT_URL)"));
    assert_contains!(down.stderr, "did not answer");

    let s3 = S3::start("team");
    let missing = run(&p, "s3://no-such-bucket/x", &s3.env());
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert_contains!(missing.stderr, "the bucket `no-such-bucket` does not exist");

    let guarded = S3::checking_credentials("guarded");
    let refused = run(&p, "s3://guarded/x", &guarded.env());
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert_contains!(refused.stderr, "refused the credentials");
    assert_contains!(refused.stderr, "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");

    let scheme = run(&p, "gs://team/x", &s3.env());
    assert_eq!(scheme.code, 2, "{}", scheme.stderr);
    assert_contains!(
        scheme.stderr,
        "starts with s3:// (S3-compatible object storage) or file://"
    );
    for r in [&down, &missing, &refused, &scheme] {
        assert_not_contains!(r.stderr, SECRET);
    }

    // The local cache is untouched: the same run without the shared cache computes nothing.
    let local = p.run(&["run", "pipeline.yaml"]).ok();
    assert!(STAGES.iter().all(|s| local.cached(s)), "{}", local.stdout);
    // And the shared cache, once reachable, gets what was made here before it.
    let publish = run(&p, "s3://team/x", &s3.env()).ok();
    assert!(STAGES.iter().all(|s| publish.cached(s)), "{}", publish.stdout);
    let other = machine();
    let copied = run(&other, "s3://team/x", &s3.env()).ok();
    assert!(STAGES.iter().all(|s| copied.cached(s)), "{}", copied.stdout);
}

#[test]
fn a_run_killed_between_publishing_data_and_record_leaves_nothing_trusted() {
    let s3 = S3::start("team");
    let env = s3.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Where the kill points are, on a throwaway prefix.
    let traced = machine().run_env(
        &["run", "pipeline.yaml", "--cache", "s3://team/trace"],
        &[env_ref.clone(), vec![("PIPELINE_KILL_TRACE", "1")]].concat(),
    );
    let point = traced.kill_point("resize: data published, record not");

    let first = machine();
    let killed = first.run_env(
        &["run", "pipeline.yaml", "--cache", "s3://team/k"],
        &[env_ref.clone(), vec![("PIPELINE_KILL_AT", point.as_str())]].concat(),
    );
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    // Its data object is there, its record is not: another machine computes resize itself.
    let second = machine();
    let other = run(&second, "s3://team/k", &env).ok();
    assert!(other.cached("split") && other.ran("resize"), "{}", other.stdout);
    // The killed machine's rerun finishes: resize was committed locally, and what the other
    // machine published since is copied, not computed.
    let rerun = run(&first, "s3://team/k", &env).ok();
    assert!(STAGES.iter().all(|s| rerun.cached(s)), "{}", rerun.stdout);
    first.run(&["cache", "verify", "pipeline.yaml"]).ok();
    assert_eq!(data(&first), data(&second));
}

/// A TCP relay to the server that stops relaying (closes every connection and refuses new
/// ones) once it has passed `budget` requests: the server going away in the middle of a run.
struct Relay {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(to: u16, budget: usize) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let (flag, seen) = (flag.clone(), seen.clone());
                let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_in, mut c_out) = (server, client);
                // Client to server: count request lines; past the budget, cut both ways.
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let requests = buf[..n].windows(11).filter(|w| w == b" HTTP/1.1\r\n").count();
                        if seen.fetch_add(requests, Ordering::SeqCst) + requests > budget {
                            flag.store(true, Ordering::SeqCst);
                        }
                        if flag.load(Ordering::SeqCst) || s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_in.shutdown(std::net::Shutdown::Both);
                    let _ = s_out.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Relay { port, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread so it sees the flag and lets go of the port.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn the_server_going_away_mid_run_fails_the_run_and_the_rerun_finishes_the_work() {
    let s3 = S3::start("team");
    let p = machine();
    // The server answers a dozen requests, then is gone: a few stages are published.
    let relay = Relay::start(s3.port, 12);
    let cut = run(&p, "s3://team/x", &aws_env(&format!("http://127.0.0.1:{}", relay.port)));
    assert_eq!(cut.code, 1, "{}\n{}", cut.stdout, cut.stderr);
    // Cut while resize's data went up: resize is committed here, its publishing failed.
    assert_contains!(
        cut.stderr,
        "stage `resize` failed: cannot upload s3://team/x/artifacts/"
    );
    assert_contains!(cut.stderr, "did not answer");
    assert!(cut.ran("ingest") && cut.ran("split"), "{}", cut.stdout);
    drop(relay);
    // Back (straight to the server now): what ran is cached here and gets published; the
    // rest runs.
    let rerun = run(&p, "s3://team/x", &s3.env()).ok();
    assert!(rerun.cached("ingest") && rerun.cached("resize"), "{}", rerun.stdout);
    assert!(
        STAGES.iter().all(|s| rerun.cached(s) || rerun.ran(s)),
        "{}",
        rerun.stdout
    );
    let other = machine();
    let copied = run(&other, "s3://team/x", &s3.env()).ok();
    assert!(STAGES.iter().all(|s| copied.cached(s)), "{}", copied.stdout);
    assert_eq!(data(&other), data(&p));
}
