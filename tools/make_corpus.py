"""Generate a Kaggle-like corpus of JPEGs from the shipped photos, deterministically.

usage: python3 tools/make_corpus.py OUT_DIR N [--size 500x375] [--quality 90] [--seed 0]
                                              [--start K]

Each output image `cat.K.jpg` / `dog.K.jpg` is a shipped 32x32 photo upscaled (bicubic) to
the target size with seeded Gaussian noise and a seeded brightness shift added, so the JPEGs
carry real detail and are all distinct. Needs Pillow and numpy (pip install pillow numpy).

`--start K` writes images numbered K..K+N-1 instead of 0..N-1 (e.g. to grow a corpus of K
images by N). With K > 0 each image k draws its noise from its own generator seeded with
(seed, k), so the output is deterministic and distinct from every other image; the default
(K = 0) keeps the original single seeded stream, so its output is unchanged.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("n", type=int)
ap.add_argument("--size", default="500x375")
ap.add_argument("--quality", type=int, default=90)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--start", type=int, default=0, help="number of the first image (default 0)")
args = ap.parse_args()

w, h = (int(v) for v in args.size.split("x"))
src = Path(__file__).resolve().parent.parent / "data" / "cats_dogs"
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
if args.start < 0:
    ap.error("--start must be >= 0")
stream = np.random.RandomState(args.seed)
for k in range(args.start, args.start + args.n):
    # K = 0: one stream for all images (the original output); K > 0: one stream per image.
    rng = stream if args.start == 0 else np.random.RandomState([args.seed, k])
    cls = "cat" if k % 2 == 0 else "dog"
    base = Image.open(src / f"{cls}.{(k // 2) % 900}.png").convert("RGB").resize((w, h), Image.BICUBIC)
    arr = np.asarray(base, dtype=np.float32)
    arr += rng.normal(0, 12, size=arr.shape) + rng.uniform(-20, 20)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(out / f"{cls}.{k}.jpg", quality=args.quality)
if args.start == 0:
    print(f"wrote {args.n} JPEGs of {w}x{h} to {out}")
else:
    print(f"wrote {args.n} JPEGs of {w}x{h} (numbers {args.start}..{args.start + args.n - 1}) to {out}")
