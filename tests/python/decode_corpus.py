"""Every kind of JPEG and PNG a user's folder may hold, decoded by `resize` and by Pillow.

usage: python3 tests/python/decode_corpus.py BINARY WORK_DIR [--images DIR] [--size 48]

Writes a corpus with Pillow (and pypng for interlaced PNGs), or takes the files in `--images
DIR`, then runs `ingest` + `resize` to SIZE x SIZE (`on_error: skip`, `jpeg_scaling: off`)
through the binary and compares each image with Pillow's decode (EXIF orientation applied,
as `resize` does; `convert("RGB")`) resized the same way (bilinear):

  JPEG  baseline, progressive, optimized Huffman tables, restart intervals; 4:4:4, 4:2:2,
        4:2:0 and 4:1:1 subsampling; grayscale; CMYK (Adobe, inverted); every EXIF
        orientation; a broken EXIF block; an ICC profile; comments and APPn segments; a
        malformed APP14 (Adobe) segment; a malformed COM segment; and, with libjpeg-turbo's
        `cjpeg` where installed, 4:4:0, 4:1:1 across, mixed sampling factors, RGB without the
        YCbCr transform, the float DCT, a restart every MCU, and arithmetic coding (refused
        by name: a coding the decoders lack)
  PNG   RGB, RGBA, gray, gray + alpha, palette, palette + tRNS, 1/2/4-bit palettes and
        grays, 16-bit RGB, RGBA and gray, Adam7-interlaced (8- and 16-bit), APNG (its first
        frame), a text chunk, an sRGB/gAMA/iCCP chunk, a wrong CRC on intact image data
  bad   a truncated JPEG and PNG, a PNG with a damaged CRC, an empty file, text named .jpg

Prints one line per file that is rejected although Pillow decodes it (but for a coding
refused by name), or further than 2
levels from Pillow's on more than 0.5% of its values (or 8 on one); and each rejection
reason, which must be one plain sentence (no Rust debug text). Exits 1 on any of these.
Needs Pillow, numpy, pyarrow and pypng (and `cjpeg` for the arithmetic-coded file).
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
from PIL import Image, ImageOps

from corpus import generate

ap = argparse.ArgumentParser()
ap.add_argument("binary")
ap.add_argument("work")
ap.add_argument("--images")
ap.add_argument("--size", type=int, default=48)
args = ap.parse_args()
work = Path(args.work).resolve()
work.mkdir(parents=True, exist_ok=True)


def reference(path: Path, size: int):
    """Pillow's pixels, or None when Pillow cannot decode the file."""
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):
                # 16-bit gray: Pillow's convert clips at 255; OpenCV (and `resize`) scale.
                scaled = (np.asarray(im, np.float64) / 257).round().astype(np.uint8)
                im = Image.fromarray(scaled)
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.int16)
    except Exception:
        return None


images = Path(args.images).resolve() if args.images else work / "images"
if not args.images:
    generate(images)
size = args.size
yaml = work / "corpus.yaml"
yaml.write_text(
    f"name: corpus\ncache: cache\nstages:\n  ingest:\n    kind: ingest\n    path: {images}\n    labels: prefix\n"
    f"    on_error: skip\n  resize:\n    kind: resize\n    size: [{size}, {size}]\n    jpeg_scaling: off\n"
)
# The images may live outside the work folder (`--images`): let the pipeline read them.
env = dict(os.environ, PIPELINE_DATA_ROOTS=str(images))
run = subprocess.run([args.binary, "run", str(yaml), "--json"], capture_output=True, text=True, env=env)
if run.returncode != 0:
    sys.exit(f"the run failed:\n{run.stdout}\n{run.stderr}")
skipped, notes = {}, {}
for line in run.stdout.splitlines():
    summary = json.loads(line).get("summary") or {}
    for entry in summary.get("skipped") or []:
        skipped[Path(entry["path"]).name] = entry["reason"]
    for entry in summary.get("notes") or []:
        notes[Path(entry["path"]).name] = entry["note"]
out = work / "corpus.arrow"
subprocess.run(
    [args.binary, "export", str(yaml), "--stage", "resize", "-o", str(out)], check=True, capture_output=True, env=env
)
table = ipc.open_file(out).read_all()
ours = {
    Path(p).name: np.asarray(v, np.int16).reshape(size, size, 3)
    for p, v in zip(table.column("path").to_pylist(), table.column("pixels").to_pylist())
}

problems = 0
# What `ingest` lists (its default extensions); a README beside the images is not one.
files = sorted(f for f in images.iterdir() if f.is_file() and f.suffix.lower() in (".jpg", ".jpeg", ".png"))
used = far = 0
for f in files:
    ref = reference(f, size)
    if f.name in skipped:
        reason = skipped[f.name]
        debug = ("{", "Some(", "\n", "ChunkType", '"', "Format error", "Error(", "::")
        readable = not any(d in reason for d in debug)
        print(f"refused  {f.name}: {reason}")
        by_name = "arithmetic-coded" in reason
        if ref is not None and not by_name:
            print(f"  PROBLEM: Pillow decodes {f.name}")
            problems += 1
        if not readable:
            print("  PROBLEM: the reason is not one plain sentence")
            problems += 1
        continue
    if f.name not in ours:
        print(f"  PROBLEM: {f.name} is neither used nor refused")
        problems += 1
        continue
    if ref is None:
        print(f"used     {f.name}, which Pillow refuses")
        continue
    used += 1
    d = np.abs(ours[f.name] - ref)
    share = (d > 2).mean()
    if share > 0.005 or d.max() > 8:
        far += 1
        problems += 1
        print(f"  PROBLEM: {f.name}: {100 * share:.2f}% of values beyond 2 levels of Pillow's, max {d.max()}")
    else:
        print(f"ok       {f.name}: mean {d.mean():.2f}, max {d.max()}")
    if f.name in notes:
        print(f"note     {f.name}: {notes[f.name]}")
print(f"{len(files)} files: {used} used, {len(skipped)} refused; {far} further than 2 levels from Pillow; {problems} problem(s)")
sys.exit(1 if problems else 0)
