"""Decode-only floor: how fast OpenCV (libjpeg-turbo) can just decode the corpus.

usage: floor.py CORPUS_DIR --size S [--workers W] [--chunk C] [--src-size 500x375]

Each image is decoded with cv2.imread at the scale `resize` decodes it at (`--k` to choose
another): 1/4 when that is still at least twice SxS on each side (W // (2S) >= 4 and
H // (2S) >= 4, Pillow's reducing_gap rule), else whole (500x375: S=224 and S=64 -> k=1,
IMREAD_COLOR; S=32 -> k=4, IMREAD_REDUCED_COLOR_4, as 500 // 64 = 7 and 375 // 64 = 5).
Nothing else: no resize, no
arithmetic, nothing written. One OpenCV thread per process. --workers W > 1 uses a
multiprocessing.Pool of W processes (chunked imap).

The last line printed is `BENCH {json}` with k, the decoded shape, and the time measured
inside the script (without interpreter start-up and imports).
"""
import argparse
import json
import math
import os
import sys
import time

import cv2

FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
         4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
EXTENSIONS = (".jpg", ".jpeg", ".png")


def dct_scale(w, h, s):
    """The scale `resize` decodes at (its `jpeg_scaling: auto` rule)."""
    return 4 if w // (2 * s) >= 4 and h // (2 * s) >= 4 else 1


_W = {}


def init_worker(flag):
    cv2.setNumThreads(1)
    _W["flag"] = flag


def decode(path):
    img = cv2.imread(path, _W["flag"])
    if img is None:
        raise RuntimeError(f"cannot decode {path}")
    return img.shape


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--src-size", default="500x375", help="WxH of the corpus images")
    ap.add_argument("--k", type=int, choices=sorted(FLAGS), help="decode at 1/k (default: resize's rule)")
    args = ap.parse_args()

    w, h = (int(v) for v in args.src_size.split("x"))
    k = args.k or dct_scale(w, h, args.size)
    if k == 1 and (w < args.size or h < args.size):
        print(f"floor: note: {w}x{h} is smaller than {args.size}; decoding at full scale", file=sys.stderr)
    t0 = time.perf_counter()
    paths = sorted(os.path.join(args.corpus, f) for f in os.listdir(args.corpus)
                   if f.lower().endswith(EXTENSIONS))
    if not paths:
        sys.exit(f"floor.py: no images in {args.corpus}")
    if args.workers <= 1:
        init_worker(FLAGS[k])
        shapes = [decode(p) for p in paths]
    else:
        import multiprocessing as mp

        with mp.Pool(args.workers, initializer=init_worker, initargs=(FLAGS[k],)) as pool:
            shapes = list(pool.imap(decode, paths, chunksize=args.chunk))
    secs = time.perf_counter() - t0
    n = len(shapes)
    flag = "IMREAD_COLOR" if k == 1 else f"IMREAD_REDUCED_COLOR_{k}"
    print(f"floor: {n} images decoded with k={k} ({flag}) to {shapes[0][1]}x{shapes[0][0]}, "
          f"{args.workers} worker(s), {secs:.2f}s ({n / secs:.1f} images/s)")
    print("BENCH " + json.dumps({"images": n, "size": args.size, "workers": args.workers, "k": k,
                                 "flag": flag, "decoded": list(shapes[0]),
                                 "inner_seconds": round(secs, 4)}))


if __name__ == "__main__":
    main()
