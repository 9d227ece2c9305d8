"""The reference recipe of docs/design.md ("The reference problem"), as a user would write it
with OpenCV and NumPy.

usage: reference.py CORPUS_DIR OUT.npy --size S [--workers W] [--chunk C] [--cv-threads T]

Per image (sorted file names): cv2.imread (BGR, uint8), cv2.resize to SxS (INTER_LINEAR),
float32, subtract the BGR means [103.939, 116.779, 123.68], then per-image standardization
(x - x.mean()) / max(x.std(), 1/sqrt(x.size)). Every row is written into one float32 .npy
file of shape (N, S, S, 3) opened with np.lib.format.open_memmap, like a cache, and the file
is fsynced at the end (the pipeline syncs its artifacts too).

--workers 1 (default) runs in this process; --workers W > 1 uses a multiprocessing.Pool of W
processes, each writing its rows into the shared memmap by index (chunked imap).
OpenCV gets --cv-threads threads per process (default 1, so one process is one core;
0 keeps OpenCV's own default).

The last line printed is `BENCH {json}` with the images, size and the time measured inside
the script (without interpreter start-up and imports).
"""
import argparse
import json
import math
import os
import sys
import time

import cv2
import numpy as np

MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS))


def preprocess(path, size):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot decode {path}")
    x = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x -= MEAN_BGR
    return (x - x.mean()) / max(float(x.std()), 1.0 / math.sqrt(x.size))


# Worker state, set once per process by init_worker.
_W = {}


def init_worker(folder, names, out, size, cv_threads):
    if cv_threads > 0:
        cv2.setNumThreads(cv_threads)
    _W.update(folder=folder, names=names, size=size, mm=np.load(out, mmap_mode="r+"))


def work_chunk(bounds):
    lo, hi = bounds
    mm, folder, names, size = _W["mm"], _W["folder"], _W["names"], _W["size"]
    for i in range(lo, hi):
        mm[i] = preprocess(os.path.join(folder, names[i]), size)
    return hi - lo


def fsync(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=32, help="images per pool task (default 32)")
    ap.add_argument("--cv-threads", type=int, default=1)
    args = ap.parse_args()

    t0 = time.perf_counter()
    names = list_images(args.corpus)
    if not names:
        sys.exit(f"reference.py: no images in {args.corpus}")
    n, s = len(names), args.size
    mm = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.float32, shape=(n, s, s, 3))
    if args.workers <= 1:
        if args.cv_threads > 0:
            cv2.setNumThreads(args.cv_threads)
        for i, name in enumerate(names):
            mm[i] = preprocess(os.path.join(args.corpus, name), s)
        mm.flush()
        del mm
    else:
        mm.flush()  # the header and size are on disk before the workers map the file
        del mm
        import multiprocessing as mp

        chunks = [(lo, min(lo + args.chunk, n)) for lo in range(0, n, args.chunk)]
        init = (args.corpus, names, args.out, s, args.cv_threads)
        with mp.Pool(args.workers, initializer=init_worker, initargs=init) as pool:
            done = sum(pool.imap(work_chunk, chunks))
        assert done == n, (done, n)
    fsync(args.out)
    secs = time.perf_counter() - t0
    print(f"reference: {n} images -> {args.out} float32 ({n}, {s}, {s}, 3), "
          f"{args.workers} worker(s), {secs:.2f}s ({n / secs:.1f} images/s)")
    print("BENCH " + json.dumps({"images": n, "size": s, "workers": args.workers,
                                 "cv_threads": args.cv_threads, "inner_seconds": round(secs, 4)}))


if __name__ == "__main__":
    main()
