"""How far `resize`'s pixels are from Pillow's, JPEG by JPEG, with and without DCT scaling.

usage: python3 tests/python/jpeg_fidelity.py BINARY WORK_DIR [--sizes 32,64,224] [--images DIR]

Writes a set of JPEGs of many kinds with Pillow (sizes from 96x96 to 2048x1536; 4:4:4,
4:2:2 and 4:2:0 subsampling; baseline and progressive; quality 75 and 95; textured content
made from the shipped photos plus seeded noise), or takes the JPEGs in `--images DIR`, runs
`resize` to each target size with `jpeg_scaling: auto` and `off` through the binary, exports
the pixels, and compares each image with:

  full   Pillow's full decode + resize (bilinear, as `resize`'s default), the reference;
  draft  Pillow's reduced decode + resize, as `Image.thumbnail` does it (`draft` to at least
         twice the target, its `reducing_gap` rule), the bar a reduced decode must meet.

Prints, per target size, the mean and max |difference| in levels of each path against
`full`, the share of images whose every pixel is within 2 levels of `full`, and for the
images our `auto` path decoded at a reduced scale (its pixels differ from `off`'s), how many
are further from `full` than Pillow's draft is (+25%). Exits 1 when one is, or when an
image decoded whole has more than 0.5% of its values beyond 2 levels of `full` or one beyond 8 (a
different decoder rounds its inverse DCT and chroma upsampling otherwise, by a level or two;
more is a bug). `tests/it/fidelity.rs` runs it. Needs Pillow, numpy and pyarrow.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("binary")
ap.add_argument("work")
ap.add_argument("--sizes", default="32,64,224")
ap.add_argument("--images", help="use the JPEGs in this folder instead of generating them")
args = ap.parse_args()

work = Path(args.work).resolve()
work.mkdir(parents=True, exist_ok=True)
root = Path(__file__).resolve().parents[2]


def generate(out: Path) -> None:
    """JPEGs of many kinds, deterministic: a shipped photo upscaled, with texture and noise."""
    out.mkdir(parents=True, exist_ok=True)
    photos = sorted((root / "data" / "cats_dogs").glob("**/*.png"))[:40]
    rng = np.random.RandomState(7)
    sizes = [(96, 96), (128, 128), (256, 192), (500, 375), (640, 480), (1024, 768), (2048, 1536)]
    kinds = [
        ("444", dict(subsampling=0)),
        ("422", dict(subsampling=1)),
        ("420", dict(subsampling=2)),
        ("420p", dict(subsampling=2, progressive=True)),
        ("444p", dict(subsampling=0, progressive=True)),
    ]
    n = 0
    for (w, h) in sizes:
        for kind, opts in kinds:
            for quality in (75, 95):
                photo = Image.open(photos[n % len(photos)]).convert("RGB")
                base = np.asarray(photo.resize((w, h), Image.BICUBIC), dtype=np.float32)
                yy, xx = np.mgrid[0:h, 0:w]
                stripes = 18 * np.sin(xx * (0.05 + 0.3 * rng.rand()) + yy * 0.2 * rng.rand())[..., None]
                noise = rng.normal(0, 6, base.shape)
                img = np.clip(base + stripes + noise, 0, 255).astype(np.uint8)
                name = f"cat.{n}.{w}x{h}.{kind}.q{quality}.jpg" if n % 2 == 0 else f"dog.{n}.{w}x{h}.{kind}.q{quality}.jpg"
                Image.fromarray(img).save(out / name, quality=quality, **opts)
                n += 1


def export(images: Path, size: int, scaling: str) -> dict:
    """Runs ingest + resize through the binary; the pixels by file name."""
    name = f"f{size}{scaling}"
    yaml = work / f"{name}.yaml"
    yaml.write_text(
        f"name: {name}\ncache: cache\nstages:\n  ingest:\n    kind: ingest\n    path: {images}\n"
        f"    labels: prefix\n  resize:\n    kind: resize\n    size: [{size}, {size}]\n"
        f"    jpeg_scaling: {scaling}\n"
    )
    # The images may live outside the work folder (`--images`): let the pipeline read them.
    env = dict(os.environ, PIPELINE_DATA_ROOTS=str(images))
    subprocess.run([args.binary, "run", str(yaml)], check=True, stdout=subprocess.DEVNULL, env=env)
    out = work / f"{name}.arrow"
    subprocess.run(
        [args.binary, "export", str(yaml), "--stage", "resize", "-o", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    table = ipc.open_file(out).read_all()
    paths = table.column("path").to_pylist()
    pixels = table.column("pixels").to_pylist()
    return {Path(p).name: np.asarray(v, dtype=np.int16).reshape(size, size, 3) for p, v in zip(paths, pixels)}


def pillow(path: Path, size: int, draft: bool) -> np.ndarray:
    im = Image.open(path)
    if draft:
        im.draft("RGB", (size * 2, size * 2))
    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.int16)


images = Path(args.images).resolve() if args.images else work / "images"
if not args.images:
    generate(images)
files = sorted(images.glob("*.jp*g"))
print(f"{len(files)} JPEGs in {images}")
worst = 0
for size in (int(s) for s in args.sizes.split(",")):
    auto, off = export(images, size, "auto"), export(images, size, "off")
    rows = []
    for f in files:
        full = pillow(f, size, False)
        d_draft = np.abs(pillow(f, size, True) - full)
        d_auto = np.abs(auto[f.name] - full)
        d_off = np.abs(off[f.name] - full)
        rows.append((f.name, bool((auto[f.name] != off[f.name]).any()), d_auto, d_off, d_draft))
    def stats(i):
        means = [r[i].mean() for r in rows]
        return f"mean {np.mean(means):.2f} max {max(r[i].max() for r in rows):3d}"
    within = sum(1 for r in rows if r[2].max() <= 2)
    within_draft = sum(1 for r in rows if r[4].max() <= 2)
    scaled = [r for r in rows if r[1]]
    beyond = [r for r in scaled if r[2].mean() > 1.25 * max(r[4].mean(), 0.5)]
    print(f"{size}x{size}: auto {stats(2)} | off {stats(3)} | Pillow draft {stats(4)}")
    print(
        f"  within 2 levels of Pillow's full decode everywhere: auto {within}/{len(rows)}, "
        f"Pillow's draft {within_draft}/{len(rows)}"
    )
    print(f"  decoded at a reduced scale: {len(scaled)}; further than Pillow's draft (+25%): {len(beyond)}")
    for name, _, d_auto, _, d_draft in beyond:
        print(f"    {name}: mean {d_auto.mean():.2f} (draft {d_draft.mean():.2f})")
    worst += len(beyond)
    for name, was_reduced, d_auto, _, _ in rows:
        if was_reduced:
            continue
        share = (d_auto > 2).mean()
        if share > 0.005 or d_auto.max() > 8:
            print(f"    {name}: {100 * share:.2f}% of values beyond 2 levels, max {d_auto.max()}")
            worst += 1
sys.exit(1 if worst else 0)
