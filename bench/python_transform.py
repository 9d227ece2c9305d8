"""The Python package's batch `transform` against the CLI's `resize` stage, side by side.

usage: PYTHON bench/python_transform.py BINARY WORK_DIR [--n 2000] [--reps 3] [--sizes 224 64]

Writes N 500x375 JPEGs (shipped photos enlarged, with texture) into WORK_DIR once, reads
them once so they are in the page cache, then for each size S, REPS times, in turns:
- the CLI: `pipeline run` of ingest + resize to SxS with an empty cache; the rate is rows /
  the `resize` stage's own seconds (its `ran` event: read, check, decode, resize, write);
- the package: `transform(paths, stage="resize")` of the same files in batches of 256
  (read, decode, resize, widen to float32 in memory), on the same 2 cores.
Prints the median images/s of each and their ratio, one JSON line per size at the end.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

import pipeline

ap = argparse.ArgumentParser()
ap.add_argument("binary")
ap.add_argument("work")
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
args = ap.parse_args()
work = Path(args.work).resolve()
images = work / f"jpegs-{args.n}"
root = Path(__file__).resolve().parents[1]

if not (images / "done").exists():
    images.mkdir(parents=True, exist_ok=True)
    photos = sorted((root / "data" / "cats_dogs").glob("*.png"))
    rng = np.random.default_rng(0)
    for i in range(args.n):
        src = photos[i % len(photos)]
        base = np.asarray(Image.open(src).convert("RGB").resize((500, 375), Image.BICUBIC), np.float32)
        base += rng.normal(0, 6, base.shape)
        cls = src.name.split(".")[0]
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(images / f"{cls}.{i}.jpg", quality=90)
    (images / "done").write_text("")
paths = sorted(images.glob("*.jpg"))
# The images live outside the projects: let both sides read them.
os.environ["PIPELINE_DATA_ROOTS"] = str(images)
for f in paths:  # into the page cache
    f.read_bytes()


def cli_rate(size):
    project = work / f"cli-{size}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    yaml = project / "p.yaml"
    yaml.write_text(
        f"name: bench\ncache: cache\nstages:\n  ingest:\n    kind: ingest\n    path: {images}\n    labels: prefix\n"
        f"  resize:\n    kind: resize\n    size: [{size}, {size}]\n"
    )
    run = subprocess.run(
        [args.binary, "run", str(yaml), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in run.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "ran" and event.get("stage") == "resize":
            return event["rows"] / event["seconds"], yaml
    raise SystemExit(f"no `ran` event for resize:\n{run.stdout}")


results = []
for size in args.sizes:
    cli, py = [], []
    for _ in range(args.reps):
        rate, yaml = cli_rate(size)
        cli.append(rate)
        p = pipeline.open(yaml)
        p.transform(paths[:2], stage="resize")  # load the stage once
        t0 = time.perf_counter()
        for at in range(0, len(paths), 256):
            p.transform(paths[at : at + 256], stage="resize")
        py.append(len(paths) / (time.perf_counter() - t0))
    c, q = statistics.median(cli), statistics.median(py)
    print(f"{size}x{size}: CLI resize {c:,.0f} images/s {['%.0f' % r for r in cli]}, "
          f"Python transform {q:,.0f} images/s {['%.0f' % r for r in py]}: {q / c:.2f}x")
    results.append({"size": size, "n": len(paths), "cli_per_s": round(c), "python_per_s": round(q), "ratio": round(q / c, 3)})
for r in results:
    print(json.dumps(r))
