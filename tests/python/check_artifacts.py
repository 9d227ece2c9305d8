"""Open every artifact a pipeline produced with pyarrow, polars and numpy, and check the
documented format: columns, dtypes, shape and lineage metadata (README, "Cache format").

usage: python3 check_artifacts.py CACHE_DIR PIPELINE_NAME STAGE [STAGE ...] [--exported STAGE=PATH ...]
Prints one line per artifact; exits non-zero on the first mismatch. A view (an element-wise
stage's artifact: rows and lineage, pixels in the stored artifact it names) is checked for
its reference; `--exported STAGE=PATH` checks a file `pipeline export` wrote for STAGE, which
must hold the pixels as the stage's readers see them.
"""
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

cache, name = Path(sys.argv[1]), sys.argv[2]
rest = sys.argv[3:]
stages = rest[: rest.index("--exported")] if "--exported" in rest else rest
exported = dict(a.split("=", 1) for a in rest[len(stages) + 1 :])
expected_kinds = []
for stage in stages + list(exported):
    pointer = json.loads((cache / "pipelines" / name / f"{stage}.json").read_text())
    fp = pointer["fingerprint"]
    record = json.loads((cache / "artifacts" / f"{fp}.json").read_text())
    if stage in exported:
        path = Path(exported[stage])
        expected_kinds = expected_kinds[: [i for i, s in enumerate(stages) if s == stage][0]]
    else:
        path = cache / "artifacts" / f"{fp}.arrow"
    expected_kinds.append(record["kind"])
    table = ipc.open_file(path).read_all()
    md = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    lineage = json.loads(md["pipeline.lineage"])
    classes = json.loads(md["pipeline.classes"])

    assert table.num_rows == record["rows"], (stage, table.num_rows, record["rows"])
    assert [e["kind"] for e in lineage] == expected_kinds, (stage, lineage)
    assert lineage[-1]["fingerprint"] == fp and lineage[-1]["stage"] == stage
    for e in lineage:
        assert set(e) >= {"stage", "kind", "version", "params", "fingerprint"}, e
    assert md["pipeline.channel_order"] == "RGB"

    schema = table.schema
    assert schema.field("id").type == pa.string()
    assert schema.field("path").type == pa.string()
    assert schema.field("label").type == pa.int32()
    assert schema.field("class").type == pa.string()
    ids = table.column("id").to_pylist()
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids), "id is hex SHA-256"
    labels = np.asarray(table.column("label"))
    assert labels.min() >= 0 and labels.max() < len(classes)
    assert [classes[l] for l in labels[:20]] == table.column("class").to_pylist()[:20]
    if "split" in expected_kinds:
        assert schema.field("partition").type == pa.string()
        assert set(table.column("partition").to_pylist()) <= {"train", "val", "test"}
    else:
        assert "partition" not in schema.names

    if "pixels" in schema.names:
        h, w, c = json.loads(md["pipeline.shape"])
        dtype = md["pipeline.dtype"]
        item = {"uint8": pa.uint8(), "float32": pa.float32()}[dtype]
        assert schema.field("pixels").type == pa.list_(pa.field("item", item, nullable=False), h * w * c), schema
        chunks = table.column("pixels").combine_chunks()
        flat = chunks.values.to_numpy(zero_copy_only=False)
        images = flat.reshape(table.num_rows, h, w, c)
        assert images.dtype == np.dtype(dtype)
        assert np.isfinite(images.astype(np.float64)).all()
        if lineage[-1]["kind"] == "normalize" and lineage[-1]["params"].get("method") == "per_image":
            per_image = images.reshape(table.num_rows, -1).astype(np.float64)
            assert np.abs(per_image.mean(axis=1)).max() < 1e-4
            assert np.abs(per_image.std(axis=1) - 1).max() < 1e-3
        shape = f"{table.num_rows}x{h}x{w}x{c} {dtype}"
    elif "pipeline.pixels_from" in md:
        # A view: its pixels are those of the stored artifact it names, through its steps.
        stored = cache / "artifacts" / md["pipeline.pixels_from"]
        smd = {k.decode(): v.decode() for k, v in (ipc.open_file(stored).schema.metadata or {}).items()}
        assert "pixels" in ipc.open_file(stored).schema.names and "pipeline.pixels_from" not in smd
        assert smd["pipeline.shape"] == md["pipeline.shape"]
        assert lineage[: len(json.loads(smd["pipeline.lineage"]))] == json.loads(smd["pipeline.lineage"])
        shape = f"view of {stored.name[:12]} {md['pipeline.dtype']}"
    else:
        assert "pipeline.shape" not in md
        shape = "no pixels"

    frame = pl.read_ipc(path)
    assert frame.height == table.num_rows
    assert frame.columns == schema.names
    print(f"ok {stage}: {table.num_rows} rows, {shape}, {len(lineage)} lineage entries ({path.name[:12]})")
