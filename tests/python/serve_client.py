"""A real HTTP client against `pipeline serve` (tests/it/serve.rs starts the server).

usage: serve_client.py URL EXPECTED.json IMAGE...

EXPECTED.json is `pipeline predict --json` for the same images. Checks, with http.client from
the standard library: /health and / answer; every image POSTed as raw bytes and as multipart
form data, from 8 threads at once, gets the probabilities `predict` gave, exactly; a body that
is not an image is a 400 with a JSON error and the server keeps answering; a body past the
limit is a 413; unknown routes and methods are 404 and 405. Prints one JSON summary line.
"""
import http.client
import json
import sys
import threading
import urllib.parse
import uuid

url, expected_path, images = sys.argv[1], sys.argv[2], sys.argv[3:]
target = urllib.parse.urlparse(url)
expected = {p["image"]: p for p in json.load(open(expected_path))["predictions"]}


def request(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.getheader("Content-Type") == "application/json", resp.getheaders()
    return resp.status, json.loads(data)


def multipart(name, data):
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


status, health = request("GET", "/health")
assert (status, health) == (200, {"status": "ok"}), (status, health)
status, model = request("GET", "/")
assert status == 200 and len(model["model"]) == 64 and model["lineage"], model

failures = []
answered = [0]
lock = threading.Lock()


def check(image):
    data = open(image, "rb").read()
    want = expected[image]
    for body, headers in [(data, {"Content-Type": "image/png"}), multipart(image, data)]:
        status, got = request("POST", "/predict", body, headers)
        ok = status == 200 and got["probabilities"] == want["probabilities"] and got["class"] == want["class"]
        with lock:
            answered[0] += 1
            if not ok:
                failures.append((image, status, got, want["probabilities"]))


threads = [threading.Thread(target=lambda i=i: [check(im) for im in images[i::8]]) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not failures, failures[:3]

status, err = request("POST", "/predict", b"this is not an image")
assert status == 400 and "not a usable image" in err["error"] and err["status"] == 400, (status, err)
body, headers = multipart("x.png", b"")
status, err = request("POST", "/predict", body.replace(b'filename="x.png"', b""), headers)
assert status == 400, (status, err)
status, err = request("POST", "/predict", b"x" * 2_000_001)
assert status == 413 and "limit" in err["error"], (status, err)
assert request("GET", "/nope")[0] == 404
assert request("GET", "/predict")[0] == 405
status, _ = request("POST", "/predict", open(images[0], "rb").read())
assert status == 200, "still serving after the bad requests"
print(json.dumps({"answered": answered[0], "images": len(images)}))
