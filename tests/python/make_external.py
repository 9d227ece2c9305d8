"""Write features files "made outside the pipeline" for the `audit --compare` tests.

usage: python3 make_external.py CACHE_DIR PIPELINE_NAME IMAGES_DIR OUT_DIR

From the pipeline's cached `resize` output (uint8 RGB) and source images, re-implements the
example's preprocessing in NumPy (subtract the ImageNet means, standardize per image) with
one planted difference per file:
  same.arrow     exactly the pipeline's recipe, with an `id` column     -> consistent
  bgr.npy        channels in BGR order, no ids                         -> BGR
  nomean.arrow   mean subtraction skipped, with ids                    -> mean subtraction missing
  u8.npy         the resized pixels stored as uint8, no ids            -> integer dtype
  small.arrow    resized to 16x16 with Pillow's BICUBIC, with paths    -> resize size and filter
"""
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from PIL import Image

cache, name, images, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)
fp = json.loads((cache / "pipelines" / name / "resize.json").read_text())["fingerprint"]
table = ipc.open_file(cache / "artifacts" / f"{fp}.arrow").read_all()
h, w, c = json.loads(table.schema.metadata[b"pipeline.shape"])
resized = table.column("pixels").combine_chunks().values.to_numpy().reshape(-1, h, w, c)
ids, paths = table.column("id"), table.column("path")
MEAN_RGB = np.array([123.68, 116.779, 103.939], dtype=np.float32)


def standardize(x):
    x = x.astype(np.float32)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    s = x.std(axis=(1, 2, 3), keepdims=True)
    return ((x - m) / np.maximum(s, 1 / np.sqrt(x[0].size))).astype(np.float32)


def save_arrow(path, x, key=None, values=None):
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), int(np.prod(x.shape[1:])))
    cols = {"pixels": flat}
    if key:
        cols[key] = values
    t = pa.table(cols)
    with ipc.new_file(path, t.schema) as writer:
        writer.write_table(t)


recipe = standardize(resized.astype(np.float32) - MEAN_RGB)
save_arrow(out / "same.arrow", recipe, "id", ids)
np.save(out / "bgr.npy", np.ascontiguousarray(recipe[..., ::-1]))
save_arrow(out / "nomean.arrow", standardize(resized), "id", ids)
np.save(out / "u8.npy", resized)
small = np.stack([
    np.asarray(Image.open(images / p).convert("RGB").resize((16, 16), Image.BICUBIC)) for p in paths.to_pylist()
])
save_arrow(out / "small.arrow", standardize(small.astype(np.float32) - MEAN_RGB), "path", paths)
print("ok")
