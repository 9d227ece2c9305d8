"""Cache bytes per image per stage, from a pipeline cache's artifact records.

usage: cache_stats.py CACHE_DIR --pipeline NAME --images N --size S --label LABEL [--append RESULTS]

Reads CACHE_DIR/artifacts/*.json (records with `stage`, `kind`, `rows`, `bytes`; validate
reports `*.report.json` are skipped). When CACHE_DIR/pipelines/NAME/<stage>.json pointers
exist, only the artifacts they name count (the ones the last run produced); otherwise every
record of pipeline NAME. Prints one JSON line (and appends it to RESULTS with --append):
per stage its bytes, bytes per image (bytes / N) and seconds; the total of the records'
bytes, the bytes of the whole cache folder on disk, and the final float32 feature bytes
N*S*S*3*4 they compare to.
"""
import argparse
import json
import os
from pathlib import Path


def dir_bytes(root):
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--append")
    args = ap.parse_args()

    cache = Path(args.cache)
    pointers = {}
    pdir = cache / "pipelines" / args.pipeline
    if pdir.is_dir():
        for p in pdir.glob("*.json"):
            try:
                pointers[p.stem] = json.loads(p.read_text())["fingerprint"]
            except (ValueError, KeyError):
                pass
    stages = []
    for rec_path in sorted((cache / "artifacts").glob("*.json")):
        if rec_path.name.endswith(".report.json"):
            continue
        rec = json.loads(rec_path.read_text())
        if rec.get("pipeline") not in (None, args.pipeline):
            continue
        if pointers and pointers.get(rec.get("stage")) != rec.get("fingerprint", rec_path.stem):
            continue
        stages.append({
            "stage": rec.get("stage"),
            "kind": rec.get("kind"),
            "rows": rec.get("rows"),
            "bytes": rec.get("bytes"),
            "bytes_per_image": round(rec.get("bytes", 0) / args.images, 1),
            "seconds": rec.get("seconds"),
        })
    order = {name: i for i, name in enumerate(["ingest", "split", "resize", "mean_subtract", "normalize"])}
    stages.sort(key=lambda s: (order.get(s["kind"], 99), s["stage"] or ""))
    total = sum(s["bytes"] or 0 for s in stages)
    features = args.images * args.size * args.size * 3 * 4
    out = {
        "type": "cache", "label": args.label, "pipeline": args.pipeline, "images": args.images,
        "size": args.size, "stages": stages, "total_bytes": total,
        "dir_bytes": dir_bytes(cache), "feature_bytes": features,
        "total_over_features": round(total / features, 3) if features else None,
    }
    line = json.dumps(out)
    print(line)
    if args.append:
        with open(args.append, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
