"""Generate a Kaggle-like corpus of JPEGs from the shipped photos, deterministically.

usage: python3 tools/make_corpus.py OUT_DIR N [--size 500x375] [--quality 90] [--seed 0]

Each output image `cat.K.jpg` / `dog.K.jpg` is a shipped 32x32 photo upscaled (bicubic) to
the target size with seeded Gaussian noise and a seeded brightness shift added, so the JPEGs
carry real detail and are all distinct. Needs Pillow and numpy (pip install pillow numpy).
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
args = ap.parse_args()

w, h = (int(v) for v in args.size.split("x"))
src = Path(__file__).resolve().parent.parent / "data" / "cats_dogs"
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
rng = np.random.RandomState(args.seed)
for k in range(args.n):
    cls = "cat" if k % 2 == 0 else "dog"
    base = Image.open(src / f"{cls}.{(k // 2) % 900}.png").convert("RGB").resize((w, h), Image.BICUBIC)
    arr = np.asarray(base, dtype=np.float32)
    arr += rng.normal(0, 12, size=arr.shape) + rng.uniform(-20, 20)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(out / f"{cls}.{k}.jpg", quality=args.quality)
print(f"wrote {args.n} JPEGs of {w}x{h} to {out}")
