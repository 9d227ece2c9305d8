"""Load for `pipeline serve`: POSTs images from CONCURRENCY client threads, one connection per request,
for a bounded number of requests; prints requests/s and latency percentiles as one JSON line.

usage: serve_load.py URL REQUESTS CONCURRENCY IMAGE...
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

url, total, concurrency, images = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
target = urllib.parse.urlparse(url)
bodies = [open(p, "rb").read() for p in images]
latencies, errors = [], [0]
lock = threading.Lock()
counter = iter(range(total))


def client():
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            return
        start = time.perf_counter()
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        conn.request("POST", "/predict", body=bodies[i % len(bodies)])
        resp = conn.getresponse()
        resp.read()
        conn.close()
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)
            if resp.status != 200:
                errors[0] += 1


start = time.perf_counter()
threads = [threading.Thread(target=client) for _ in range(concurrency)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - start
latencies.sort()
pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
print(json.dumps({"requests": len(latencies), "errors": errors[0], "concurrency": concurrency,
                  "seconds": round(wall, 3), "requests_per_s": round(len(latencies) / wall, 1),
                  "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2)}))
