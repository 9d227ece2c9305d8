#!/usr/bin/env python3
"""Build the Pillow reference fixtures for the resize kernel (src/resize.rs).

How to run (from the crate root; needs `pip install pillow numpy`):

    python3 tools/make_resize_fixtures.py

Generated with Pillow 13.0.0 and numpy 2.4.6. The output is deterministic for a
given Pillow version; if you regenerate with another version, check the diff of
`tests/fixtures/resize/manifest.tsv` and rerun `cargo test`. Note: Pillow 13
runs the vertical pass first when the height shrinks by more than twice as many
pixels as the width (python-pillow/Pillow#9549); older versions always ran the
horizontal pass first, so their output differs for e.g. the 30x10 and 90x20
cases, by more than 1 near hard edges.

What it writes to tests/fixtures/resize/:
  * src_cat0.png, src_dog0.png   byte-for-byte copies of the 32x32 RGB photos
                                 data/cats_dogs/{cat,dog}.0.png
  * src_synth.png                a 97x61 RGB synthetic image (sharp edges,
                                 gradients, seeded noise from RandomState(7))
  * <src>__<mode>__<filter>__<W>x<H>.png
                                 Pillow output for that source, filter and size.
                                 mode "stretch" = Image.resize((W, H), filter);
                                 mode "fit"     = ImageOps.fit(img, (W, H), filter,
                                                  centering=(0.5, 0.5))
  * manifest.tsv                 one line per output: file, source, mode, filter,
                                 width, height (the Rust test reads this).

The Rust test requires every value to be within +-1 of Pillow's output.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps

CRATE = Path(__file__).resolve().parent.parent
OUT = CRATE / "tests" / "fixtures" / "resize"
DATASET = Path(__file__).resolve().parent.parent / "data" / "cats_dogs"

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos3": Image.Resampling.LANCZOS,
}

# (source name, stretch sizes, fit sizes)
PLAN = [
    # (30, 10) and (90, 20) shrink the height much more than the width, so
    # Pillow >= 13 runs the vertical pass first.
    ("cat0", [(57, 45), (13, 17), (30, 10)], [(40, 20)]),  # fit: crops rows, upscales
    ("dog0", [(57, 45), (13, 17)], [(15, 11)]),  # fit: crops rows, downscales
    ("synth", [(160, 100), (32, 32), (24, 40), (90, 20)], [(32, 32), (24, 40)]),
]


def synthetic_97x61() -> Image.Image:
    """A small image that exercises a resampler: hard edges, smooth ramps, noise."""
    h, w = 61, 97
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    # Smooth gradients: red ramps left->right, green top->bottom.
    img[..., 0] = x * 255.0 / (w - 1)
    img[..., 1] = y * 255.0 / (h - 1)
    img[..., 2] = 128.0
    # Sharp edges: a checkerboard of 8x8 blocks in the top-left quadrant ...
    checker = ((x // 8 + y // 8) % 2 == 0) & (x < 48) & (y < 30)
    img[checker] = (255.0, 255.0, 255.0)
    img[((x // 8 + y // 8) % 2 == 1) & (x < 48) & (y < 30)] = (0.0, 0.0, 0.0)
    # ... a filled disc and a one-pixel diagonal line.
    disc = (x - 72) ** 2 + (y - 40) ** 2 <= 12**2
    img[disc] = (20.0, 200.0, 40.0)
    img[(x - 2 * y == 0)] = (255.0, 0.0, 255.0)
    # Seeded noise in the bottom-left patch (kept to a patch so PNGs stay small).
    rng = np.random.RandomState(7)
    noise = rng.randint(-60, 61, size=(h, w, 3))
    patch = (x < 40) & (y >= 34)
    img[patch] += noise[patch]
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def save_png(img: Image.Image, path: Path) -> None:
    img.save(path, format="PNG", optimize=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()

    sources = {}
    for name, fname in (("cat0", "cat.0.png"), ("dog0", "dog.0.png")):
        dst = OUT / f"src_{name}.png"
        shutil.copyfile(DATASET / fname, dst)
        dst.chmod(0o644)
        sources[name] = Image.open(dst).convert("RGB")
    synth = synthetic_97x61()
    save_png(synth, OUT / "src_synth.png")
    sources["synth"] = synth

    lines = []
    for src_name, stretch_sizes, fit_sizes in PLAN:
        src = sources[src_name]
        jobs = [("stretch", s) for s in stretch_sizes] + [("fit", s) for s in fit_sizes]
        for mode, (w, h) in jobs:
            for fname, flt in FILTERS.items():
                if mode == "stretch":
                    out = src.resize((w, h), flt)
                else:
                    out = ImageOps.fit(src, (w, h), flt, centering=(0.5, 0.5))
                assert out.size == (w, h) and out.mode == "RGB"
                file = f"{src_name}__{mode}__{fname}__{w}x{h}.png"
                save_png(out, OUT / file)
                lines.append(f"{file}\tsrc_{src_name}.png\t{mode}\t{fname}\t{w}\t{h}")

    header = (
        f"# generated by tools/make_resize_fixtures.py with Pillow {PIL.__version__}, "
        f"numpy {np.__version__}\n"
        "# file\tsource\tmode\tfilter\twidth\theight\n"
    )
    (OUT / "manifest.tsv").write_text(header + "\n".join(lines) + "\n")

    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(lines)} fixtures + 3 sources to {OUT} ({total} bytes, Pillow {PIL.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
