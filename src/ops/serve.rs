//! `pipeline serve FILE`: the trained model behind an HTTP endpoint, through the same frozen
//! preprocessing as `predict` (one [`Predictor`], so both give the same probabilities for the
//! same bytes).
//!
//! Routes: `POST /predict` (also `POST /`) with the image as the body, or as the file part of
//! a `multipart/form-data` body, answers `{"class", "label", "probabilities", "model"}`;
//! `GET /health` answers `{"status": "ok"}`; `GET /` the model: its fingerprint, train stage,
//! classes and the fingerprints of the stages that made its training data. Every error is a
//! JSON `{"error", "status"}` with a 4xx code: 400 for bytes that are not a usable image (or a
//! multipart body without a file), 404, 405, 413 past the body limit. Requests are answered by
//! a pool of worker threads; SIGTERM or SIGINT stops accepting, lets the requests in flight
//! finish, and returns.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::ops::predict::Predictor;

/// How `serve` listens.
pub struct ServeOptions {
    pub addr: String,
    pub workers: usize,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

/// Set by SIGTERM and SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Serves `predictor` until SIGTERM or SIGINT. Writes one line to `out` once it listens
/// (with the address actually bound, so `--addr 127.0.0.1:0` can be used) and one when it
/// has stopped.
pub fn serve(predictor: &Predictor, opts: &ServeOptions, out: &mut dyn Write) -> Result<()> {
    let server = Server::http(&opts.addr).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.addr))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| opts.addr.clone(), |a| a.to_string());
    install_signal_handlers()?;
    writeln!(
        out,
        "serving the model of stage `{}` ({}) on http://{addr} with {} workers: POST /predict, GET /health, GET /",
        predictor.stage,
        &predictor.fingerprint[..predictor.fingerprint.len().min(12)],
        opts.workers
    )?;
    out.flush()?;
    std::thread::scope(|scope| {
        for _ in 0..opts.workers.max(1) {
            scope.spawn(|| worker(&server, predictor, opts.max_body));
        }
    });
    writeln!(out, "stopped: the requests in flight were answered")?;
    Ok(())
}

fn install_signal_handlers() -> Result<()> {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous = unsafe { libc::signal(sig, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error()).context("cannot install the signal handler");
        }
    }
    Ok(())
}

/// Answers requests until a stop signal.
fn worker(server: &Server, predictor: &Predictor, max_body: usize) {
    while !STOP.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(request)) => handle(request, predictor, max_body),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn handle(mut request: Request, predictor: &Predictor, max_body: usize) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let (status, body) = match (method, path.as_str()) {
        (Method::Get, "/") => (200, model_json(predictor)),
        (Method::Get, "/health") => (200, json!({"status": "ok"})),
        (Method::Post, "/" | "/predict") => match read_body(&mut request, max_body) {
            Ok(bytes) => {
                let content_type = header(&request, "Content-Type").unwrap_or_default();
                predict(predictor, &content_type, &bytes)
            }
            Err((status, message)) => (status, error(status, &message)),
        },
        (_, "/" | "/predict" | "/health") => (405, error(405, "method not allowed: GET / and /health, POST /predict")),
        _ => (
            404,
            error(404, &format!("no route {path}: GET / and /health, POST /predict")),
        ),
    };
    tracing::debug!(status, path, "answered");
    let response = Response::from_data(serde_json::to_vec(&body).unwrap_or_default())
        .with_status_code(status)
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("a valid header"));
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "the client went away");
    }
}

/// The value of header `name`, if the request has it.
fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

/// The body, at most `max_body` bytes (413 past it, without reading the rest when the
/// length is declared).
fn read_body(request: &mut Request, max_body: usize) -> Result<Vec<u8>, (u16, String)> {
    let too_large = || (413, format!("the body is larger than the limit of {max_body} bytes"));
    if request.body_length().is_some_and(|n| n > max_body) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max_body as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| (400, format!("cannot read the body: {e}")))?;
    if body.len() > max_body {
        return Err(too_large());
    }
    Ok(body)
}

/// Classifies the image in a request body.
fn predict(predictor: &Predictor, content_type: &str, body: &[u8]) -> (u16, Value) {
    let image = if content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        match multipart_file(content_type, body) {
            Ok(image) => image,
            Err(message) => return (400, error(400, &message)),
        }
    } else {
        body
    };
    if image.is_empty() {
        return (400, error(400, "the body is empty: POST the image's bytes"));
    }
    match predictor.classify(image) {
        Ok(p) => (
            200,
            json!({"class": p.class, "label": p.label, "probabilities": p.probabilities,
                   "model": predictor.fingerprint}),
        ),
        Err(why) => (400, error(400, &format!("not a usable image: {why}"))),
    }
}

fn model_json(predictor: &Predictor) -> Value {
    json!({
        "model": predictor.fingerprint,
        "stage": predictor.stage,
        "classes": predictor.classes,
        "lineage": predictor.lineage.iter().map(|(stage, fp)| json!({"stage": stage, "fingerprint": fp})).collect::<Vec<_>>(),
    })
}

fn error(status: u16, message: &str) -> Value {
    json!({"error": message, "status": status})
}

/// The content of the first file part of a `multipart/form-data` body (or, without a part
/// that names a file, of the first part).
pub fn multipart_file<'a>(content_type: &str, body: &'a [u8]) -> Result<&'a [u8], String> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or("a multipart/form-data body without a boundary")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut at = find(body, &delimiter, 0).ok_or("the multipart body holds no part")? + delimiter.len();
    loop {
        if body[at..].starts_with(b"--") {
            break;
        }
        let headers_start = at + if body[at..].starts_with(b"\r\n") { 2 } else { 0 };
        let headers_end = find(body, b"\r\n\r\n", headers_start).ok_or("a multipart part without headers")?;
        let content_start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let content_end = find(body, &closing, content_start).ok_or("a multipart part that does not end")?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]).to_ascii_lowercase();
        parts.push((headers.contains("filename="), &body[content_start..content_end]));
        at = content_end + closing.len();
    }
    parts
        .iter()
        .find(|(file, _)| *file)
        .or(parts.first())
        .map(|(_, content)| *content)
        .ok_or_else(|| "the multipart body holds no part".to_string())
}

/// The first index at or after `from` where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > haystack.len() || needle.is_empty() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (headers, content) in parts {
            b.extend_from_slice(b"--XyZ\r\n");
            b.extend_from_slice(headers.as_bytes());
            b.extend_from_slice(b"\r\n\r\n");
            b.extend_from_slice(content);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--XyZ--\r\n");
        b
    }

    #[test]
    fn the_file_part_of_a_multipart_body() {
        let b = body(&[
            ("Content-Disposition: form-data; name=\"note\"", b"hello"),
            (
                "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png",
                b"\x89PNG\r\n--not the end",
            ),
        ]);
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        assert_eq!(multipart_file(ct, &b).unwrap(), b"\x89PNG\r\n--not the end");
        let only = body(&[("Content-Disposition: form-data; name=\"x\"", b"abc")]);
        assert_eq!(
            multipart_file("multipart/form-data; boundary=XyZ", &only).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn broken_multipart_bodies_are_errors_not_panics() {
        let ct = "multipart/form-data; boundary=XyZ";
        assert!(multipart_file("multipart/form-data", b"--XyZ\r\n").is_err());
        for b in [
            &b""[..],
            b"--XyZ",
            b"--XyZ\r\n",
            b"--XyZ\r\nheaders only",
            b"--XyZ\r\nh: v\r\n\r\nno end",
            b"--X",
        ] {
            assert!(multipart_file(ct, b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        assert!(multipart_file(ct, b"--XyZ--").is_err(), "no part at all");
    }
}
