"""The Python package (`python/`) against the CLI, on real photos and every kind of file.

usage: PYTHON tests/python/check_package.py BINARY WORK_DIR [--photos N] [--rss-mb MB]

PYTHON is an interpreter with the package installed (scripts/test.sh builds it with maturin
into target/python-env). In WORK_DIR it makes a project whose images are N of the shipped
photos and the decoding corpus (corpus.py: JPEGs and PNGs of every kind, and broken files),
runs it with the binary (ingest with `on_error: skip`, resize, a fitted mean, per-image
standardization, a small CNN), and checks that:

- `transform` of every row's file (by path, and by bytes) is bit for bit the values
  `pipeline export` wrote, at `resize` and at `normalize`;
- `predict_proba` is bit for bit `pipeline predict --json`, on the files the project uses
  and on shipped photos outside it;
- every file the CLI refuses is refused with the CLI's message, and so are an image past
  the decode limits, a typo in a stage's name, a stage that is not built;
- `dataset` gives each partition's rows as exported, `resize`'s in place (no copy);
- a batch `transform` lets another Python thread run (the GIL is released), and a forked
  child (a DataLoader worker) reads and transforms as the parent does;
- with --rss-mb, a pass over a `resize` artifact of that size in batches of 64 keeps the
  process's resident memory within 96 MiB of where it started (pages are dropped as it goes).

Prints what it checked; exits 1 on the first difference.
"""
import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
from PIL import Image

import pipeline
from corpus import generate, photo

ap = argparse.ArgumentParser()
ap.add_argument("binary")
ap.add_argument("work")
ap.add_argument("--photos", type=int, default=120)
ap.add_argument("--rss-mb", type=int, default=0)
args = ap.parse_args()
work = Path(args.work).resolve()
work.mkdir(parents=True, exist_ok=True)
root = Path(__file__).resolve().parents[2]
binary = args.binary


def fail(why):
    sys.exit(f"FAIL: {why}")


def cli(*argv, ok=True):
    run = subprocess.run([binary, *map(str, argv)], capture_output=True, text=True)
    if ok and run.returncode != 0:
        fail(f"`pipeline {' '.join(map(str, argv))}` failed:\n{run.stdout}\n{run.stderr}")
    return run


def cli_error(*argv):
    """The message of a command that must fail, without its `error: ` prefix."""
    run = cli(*argv, ok=False)
    if run.returncode == 0:
        fail(f"`pipeline {' '.join(map(str, argv))}` succeeded")
    return re.sub(r"^error: ", "", run.stderr.strip())


def same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def python_error(f, *a, **kw):
    try:
        f(*a, **kw)
    except pipeline.PipelineError as e:
        return str(e)
    fail(f"{f.__name__} did not raise")


def exported(yaml, stage):
    out = work / f"{stage}.arrow"
    cli("export", yaml, "--stage", stage, "-o", out)
    t = ipc.open_file(out).read_all()
    h, w, c = json.loads(t.schema.metadata[b"pipeline.shape"])
    dtype = np.uint8 if t.schema.field("pixels").type.value_type == "uint8" else np.float32
    pixels = t.column("pixels").combine_chunks().values.to_numpy(zero_copy_only=False).astype(dtype)
    return t, pixels.reshape(-1, h, w, c)


# The project: shipped photos (PNG) and the corpus (JPEG and PNG of every kind, broken files).
images = work / "images"
photos = sorted((root / "data" / "cats_dogs").glob("*.png"))
picked = photos[:: max(1, len(photos) // args.photos)][: args.photos]
unseen = photos[1 :: max(1, len(photos) // 40)][:40]
if not (images / "done").exists():
    generate(images)
    for p in picked:
        os.symlink(p, images / p.name)
    (images / "done").write_text("")
yaml = work / "pkg.yaml"
yaml.write_text(
    f"""name: pkg
cache: cache
seed: 7
stages:
  ingest:
    kind: ingest
    path: {images}
    labels: prefix
    classes: [cat, dog]
    on_error: skip
    max_width: 3000
  split:
    kind: split
    train: 0.6
    val: 0.2
    test: 0.2
  resize:
    kind: resize
    size: [24, 20]
  mean_subtract:
    kind: mean_subtract
    mean: fit
  normalize:
    kind: normalize
    method: per_image
  train:
    kind: train
    model: cnn
    blocks: [4]
    hidden: [8]
    epochs: 2
    batch_size: 32
    unvalidated: true
"""
)
os.environ["PIPELINE_DATA_ROOTS"] = f"{images}:{root / 'data'}"
cli("run", yaml)

p = pipeline.open(yaml)

# transform == the CLI's features, for every row (every kind of file the pipeline used).
for stage in ("resize", "normalize"):
    table, features = exported(yaml, stage)
    paths = [images / q for q in table.column("path").to_pylist()]
    by_path = p.transform(paths, stage=stage)
    if not same_bits(by_path, features):
        bad = [str(paths[i].name) for i in range(len(paths)) if not same_bits(by_path[i], features[i])]
        fail(f"transform(stage={stage!r}) differs from `pipeline export` on {len(bad)} file(s): {bad[:5]}")
    by_bytes = p.transform([q.read_bytes() for q in paths], stage=stage)
    if not same_bits(by_bytes, features):
        fail(f"transform of bytes (stage={stage!r}) differs from `pipeline export`")
    kinds = sorted({q.name.split(".")[2] for q in paths if q.name.count(".") > 2})
    print(f"transform({stage}): {len(paths)} rows bit for bit as exported ({len(kinds)} kinds of corpus file)")
    # The dataset, each partition in the file's order.
    parts = table.column("partition").to_pylist()
    for part in ("train", "val", "test"):
        rows = [i for i, q in enumerate(parts) if q == part]
        data = p.dataset(stage, part)
        if len(data) != len(rows) or list(data.labels) != table.column("label").to_numpy()[rows].tolist():
            fail(f"dataset({stage!r}, {part!r}) has other rows than the export")
        for j, i in enumerate(rows):
            x, y = data[j]
            if stage == "resize":
                if x.dtype != np.uint8 or x.flags.owndata or not np.array_equal(x, features[i]):
                    fail(f"dataset('resize')[{j}] is not the stored row in place")
            elif not same_bits(x, features[i]):
                fail(f"dataset({stage!r}, {part!r})[{j}] differs from the export")
        if not same_bits(data.values(), features[rows].astype(np.float32)):
            fail(f"dataset({stage!r}, {part!r}).values() differs from the export")
        batch = data.__getitems__(list(range(min(5, len(data)))))
        if not all(same_bits(x, features[rows[j]]) for j, (x, _) in enumerate(batch)):
            fail(f"dataset({stage!r}, {part!r}).__getitems__ differs from the export")
    print(f"dataset({stage}): every partition's rows as exported (zero copy: {p.dataset(stage).zero_copy})")

# PIL images and arrays of a lossless file decode to the same pixels.
png = picked[0]
with Image.open(png) as im:
    if not same_bits(p.transform(im), p.transform(png)) or not same_bits(
        p.transform(np.asarray(im.convert("RGB"))), p.transform(png)
    ):
        fail("a PIL image or an array of a PNG differs from its path")
    gray = np.asarray(im.convert("L"))
    if not same_bits(p.transform(gray), p.transform(np.repeat(gray[:, :, None], 3, axis=2))):
        fail("a gray array differs from its RGB copy")
print("PIL images and uint8 arrays: as their files")

# predict == `pipeline predict --json`, on the files the project uses and photos outside it.
used = set(exported(yaml, "resize")[0].column("path").to_pylist())
corpus = sorted(f for f in images.iterdir() if f.suffix in (".jpg", ".png") and f.name != "done")
unseen_files = [f for f in unseen if f not in picked]
good, bad = [], []
for f in corpus:
    (good if f.name in used else bad).append(f)
fresh = unseen_files + good
out = json.loads(cli("predict", yaml, "--json", *fresh).stdout)
theirs = np.array([q["probabilities"] for q in out["predictions"]], np.float32)
ours = p.predict_proba(fresh)
if not same_bits(ours, theirs):
    fail("predict_proba differs from `pipeline predict --json`")
if [q["class"] for q in p.predict(fresh)] != [q["class"] for q in out["predictions"]]:
    fail("predict's classes differ from `pipeline predict`")
print(f"predict: {len(fresh)} images ({len(unseen_files)} unseen photos), probabilities bit for bit the CLI's")

# Errors: the CLI's messages.
for f in bad:
    theirs = cli_error("predict", yaml, f)
    for what in (lambda: p.predict([f]), lambda: p.transform([f])):
        ours = python_error(what)
        if ours != theirs:
            fail(f"{f.name}: Python says {ours!r}, the CLI {theirs!r}")
wide = work / "wide.jpg"
Image.new("RGB", (3001, 8), (9, 99, 199)).save(wide)
theirs = cli_error("predict", yaml, wide)
if python_error(p.transform, wide) != theirs or "3001" not in theirs:
    fail(f"an image past the decode limits: {python_error(p.transform, wide)!r} vs {theirs!r}")
rgb = np.zeros((8, 3001, 3), np.uint8)
if "3001x8" not in python_error(p.transform, rgb):
    fail("an array past the decode limits is not refused")
theirs = cli_error("export", yaml, "--stage", "normalise", "-o", work / "x.arrow")
ours = python_error(p.transform, [png], stage="normalise")
if not theirs.endswith(ours):
    fail(f"a stage name's typo: {ours!r} vs {theirs!r}")
theirs = cli_error("export", yaml, "--set", "resize.size=[12,12]", "--stage", "normalize", "-o", work / "x.arrow")
ours = python_error(pipeline.open(yaml, set=["resize.size=[12,12]"]).transform, [png])
if ours != theirs:
    fail(f"a stage not built: {ours!r} vs {theirs!r}")
theirs = cli("check", yaml, "--set", "resize.sise=3", ok=False).stderr.strip()
if python_error(pipeline.open, yaml, set=["resize.sise=3"]) != theirs:
    fail("a typo in a param: not the CLI's message")
for what in (lambda: p.transform([3.5]), lambda: p.transform(np.zeros((4, 4, 3), np.float32))):
    try:
        what()
        fail("a value that is no image was taken")
    except TypeError:
        pass
print(f"errors: {len(bad)} refused files, decode limits, a typo, a stage not built: the CLI's messages")

# The GIL is released during a batch: another Python thread runs meanwhile, at a good part
# of the rate it runs at alone (held, it would run only between the batch's Python lines).
big_jpeg = work / "big.jpg"
photo(1600, 1200, 3).save(big_jpeg, quality=90)
ticks = [0]
stop = threading.Event()


def tick():
    while not stop.is_set():
        ticks[0] += 1


def ticked(f):
    t0, c0 = time.perf_counter(), ticks[0]
    f()
    return (ticks[0] - c0) / (time.perf_counter() - t0)


thread = threading.Thread(target=tick)
thread.start()
alone = ticked(lambda: time.sleep(0.2))
t0 = time.perf_counter()
during = ticked(lambda: p.transform([big_jpeg] * 60))
seconds = time.perf_counter() - t0
stop.set()
thread.join()
if during < 0.2 * alone:
    fail(f"another thread ran at {during / alone:.0%} of its rate during a {seconds:.2f} s batch: the GIL is held")
print(f"GIL: another thread ran at {during / alone:.0%} of its rate alone during a {seconds:.2f} s batch")

# A forked copy of the process (a DataLoader worker) reads and transforms too: the thread
# pool the parent used above does not exist there.
def in_child(q):
    data = p.dataset("normalize", "train")
    q.put((data.values([0, 1]).tobytes(), p.transform([png, png]).tobytes()))


ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
child = ctx.Process(target=in_child, args=(queue,))
child.start()
try:
    values, transformed = queue.get(timeout=60)
except Exception:
    child.kill()
    fail("a forked child did not finish reading the dataset within 60 s")
child.join()
if values != p.dataset("normalize", "train").values([0, 1]).tobytes() or transformed != p.transform([png, png]).tobytes():
    fail("a forked child read other values")
print("fork: a forked child reads and transforms as the parent does")

if args.rss_mb:
    # A `resize` artifact of --rss-mb MiB (tiny images made 224x224), read in batches of 64.
    big = work / "big"
    n = args.rss_mb * (1 << 20) // (224 * 224 * 3) + 1
    if not (big / "done").exists():
        (big / "images").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(1)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), np.uint8)).save(big / "images" / f"{'cat' if i % 2 else 'dog'}.{i}.png")
        (big / "done").write_text("")
    big_yaml = big / "big.yaml"
    big_yaml.write_text(
        "name: big\ncache: cache\nstages:\n  ingest:\n    kind: ingest\n    path: images\n    labels: prefix\n"
        "  resize:\n    kind: resize\n    size: [224, 224]\n  normalize:\n    kind: normalize\n    method: per_image\n"
    )
    cli("run", big_yaml)

    def rss():
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) // 1024

    q = pipeline.open(big_yaml)
    for stage in ("resize", "normalize"):
        data = q.dataset(stage)
        start, peak, total = rss(), 0, 0.0
        for at in range(0, len(data), 64):
            for x, _ in data.__getitems__(range(at, min(at + 64, len(data)))):
                total += float(x[0, 0, 0])
            peak = max(peak, rss())
        size = len(data) * 224 * 224 * 3 * data.dtype.itemsize
        if peak - start > 96:
            fail(f"a pass over {stage}'s {size >> 20} MiB grew the process by {peak - start} MiB")
        print(f"memory: a pass over {len(data)} rows of {stage} ({size >> 20} MiB) grew RSS by {peak - start} MiB")
print("ok")
