"""Print the benchmark's tables (markdown) from the JSON lines scripts/bench.sh wrote.

usage: report.py RESULTS.jsonl

One table of measurements (seconds, images/s, ratios, peak RSS), one of cache bytes per image
per stage, the speedup of a warm `pipeline run` over a no-op `dvc status`, and the targets
listed in bench/README.md ("Targets"), each marked PASS or FAIL. Always exits 0 when the file is readable:
a missed target is a finding, not an error.
"""
import json
import statistics
import sys


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


NOOP_ROWS = {"warm-run", "warm-status", "big-warm-run", "big-warm-status",
             "dvc-status", "dvc-repro-noop", "big-dvc-status"}


def not_noop(rec):
    """True when a row meant as a no-op did work: a stage ran or was stale, or DVC ran its stage."""
    if rec["name"] not in NOOP_ROWS:
        return False
    if rec.get("ran") or rec.get("stale"):
        return True
    if rec["name"].startswith(("dvc", "big-dvc")):
        try:
            with open(rec["log"]) as f:
                text = f.read()
        except OSError:
            return False
        if rec["name"].endswith("status"):
            return "up to date" not in text
        return "Running stage" in text
    return False


class Results:
    def __init__(self, rows):
        self.meta = next((r for r in rows if r.get("type") == "meta"), {})
        self.caches = [r for r in rows if r.get("type") == "cache"]
        self.skips = {r["name"]: r["reason"] for r in rows if r.get("type") == "skip"}
        self.loads = [r for r in rows if r.get("type") == "load"]
        self.checks = [r for r in rows if r.get("type") == "check"]
        self.runs = {}
        for r in rows:
            if r.get("type") == "measure":
                self.runs.setdefault(r["name"], []).append(r)

    def get(self, name):
        """The row's measurement: median seconds and RSS over its repetitions, or None."""
        reps = self.runs.get(name)
        if not reps:
            return None
        ok = [r for r in reps if r["rc"] == 0 and r["seconds"] is not None]
        m = dict(reps[-1])
        m["reps"] = len(reps)
        m["failed"] = len(reps) - len(ok)
        bad = [r for r in ok if not_noop(r)]
        m["not_noop"] = len(bad)
        m["not_noop_log"] = bad[0]["log"] if bad else None
        if ok:
            m["seconds"] = statistics.median(r["seconds"] for r in ok)
            m["rss_kb"] = statistics.median(r["rss_kb"] for r in ok if r["rss_kb"] is not None)
            if all("inner_seconds" in r for r in ok):
                m["inner_seconds"] = statistics.median(r["inner_seconds"] for r in ok)
        else:
            m["seconds"] = None
        return m

    def rate(self, name):
        m = self.get(name)
        if not m or not m["seconds"]:
            return None
        return m["images"] / m["seconds"]

    def seconds(self, name):
        m = self.get(name)
        return m["seconds"] if m else None


def fmt(x, digits=2, suffix=""):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}{suffix}"


def measurement_table(res):
    n, big = res.meta.get("n"), res.meta.get("big")
    rows = []  # (label, name, throughput, ref_name, floor_name)
    for s in (224, 64):
        if not any(k.endswith(f"-{s}") for k in res.runs):
            continue
        k1 = (res.get(f"floor1-{s}") or {}).get("k", "?")
        k2 = (res.get(f"floor2-{s}") or {}).get("k", "?")
        rows += [
            (f"reference, 1 process, {s}x{s}", f"ref1-{s}", True, f"ref1-{s}", None),
            (f"reference, 2 workers, {s}x{s}", f"ref2-{s}", True, f"ref1-{s}", None),
            (f"decode floor (k={k1}), 1 process, {s}x{s}", f"floor1-{s}", True, f"ref1-{s}", None),
            (f"decode floor (k={k2}), 2 workers, {s}x{s}", f"floor2-{s}", True, f"ref1-{s}", None),
            (f"**pipeline run, cold, {s}x{s}**", f"cold-{s}", True, f"ref1-{s}", f"floor2-{s}"),
        ]
    rows += [
        ("pipeline run, warm no-op", "warm-run", False, None, None),
        ("pipeline status, warm", "warm-status", False, None, None),
        ("dvc repro, cold (reference, 1 process, 224)", "dvc-repro-cold", True, "ref1-224", None),
        ("dvc status, no-op", "dvc-status", False, None, None),
        ("dvc repro, no-op", "dvc-repro-noop", False, None, None),
        ("+1%: pipeline run (incremental)", "inc-run", False, None, None),
        ("+1%: dvc status", "inc-dvc-status", False, None, None),
        ("+1%: dvc repro", "inc-dvc-repro", False, None, None),
        ("big: **pipeline run, cold, 224x224**", "big-cold", True, "ref1-224", "floor2-224"),
        ("big: pipeline run, warm no-op", "big-warm-run", False, None, None),
        ("big: pipeline status, warm", "big-warm-status", False, None, None),
        ("big: dvc repro, cold (reference, 1 process, 224)", "big-dvc-repro-cold", True, "ref1-224", None),
        ("big: dvc status, no-op", "big-dvc-status", False, None, None),
    ]
    out = [
        "| measurement | images | seconds | images/s | images/s in script | × reference 1 proc "
        "| × floor 2 workers | peak RSS MB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label, name, thr, ref, floor in rows:
        m = res.get(name)
        if m is None:
            if name in res.skips:
                out.append(f"| {label} | | skipped: {res.skips[name]} | | | | | |")
            elif name.startswith("big") and not big:
                continue  # BIG=0
            else:
                out.append(f"| {label} | | not measured | | | | | |")
            continue
        if m["reps"] > 1:
            label += f" (median of {m['reps']})"
        if m["seconds"] is None:
            out.append(f"| {label} | {m['images']} | FAILED (exit {m['rc']}, see {m['log']}) | | | | | |")
            continue
        rate = res.rate(name) if thr else None
        ref_ratio = rate / res.rate(ref) if rate and ref and res.rate(ref) else None
        floor_ratio = rate / res.rate(floor) if rate and floor and res.rate(floor) else None
        note = f" ({m['failed']} of {m['reps']} failed)" if m["failed"] else ""
        if m["not_noop"]:
            note += f" (**not a no-op** in {m['not_noop']} of {m['reps']}: see {m['not_noop_log']})"
        # Three decimals below a second (a warm run is a few hundredths).
        secs = fmt(m["seconds"], 3 if m["seconds"] < 1 else 2)
        inner = m.get("inner_seconds")
        inner_rate = m["images"] / inner if thr and name.startswith(("ref", "floor")) and inner else None
        out.append(
            f"| {label}{note} | {m['images']:,} | {secs} | {fmt(rate, 0)} | {fmt(inner_rate, 0)} | "
            f"{fmt(ref_ratio, 2, '×')} | {fmt(floor_ratio, 2, '×')} | {fmt(m['rss_kb'] / 1024, 0)} |"
        )
    return "\n".join(out)


def cache_table(res):
    if not res.caches:
        return "(no cache statistics recorded)"
    stages = []
    for c in res.caches:
        for s in c["stages"]:
            if s["stage"] not in stages:
                stages.append(s["stage"])
    head = "| bytes per image | " + " | ".join(c["label"] for c in res.caches) + " |"
    out = [head, "|---|" + "--:|" * len(res.caches)]
    for st in stages:
        cells = []
        for c in res.caches:
            s = next((x for x in c["stages"] if x["stage"] == st), None)
            cells.append(fmt(s["bytes_per_image"], 0) if s else "—")
        out.append(f"| {st} | " + " | ".join(cells) + " |")
    out.append("| **total (records)** | " + " | ".join(fmt(c["total_bytes"] / c["images"], 0) for c in res.caches) + " |")
    out.append("| cache folder on disk | " + " | ".join(fmt(c["dir_bytes"] / c["images"], 0) for c in res.caches) + " |")
    out.append("| final f32 features (S·S·3·4) | " + " | ".join(fmt(c["feature_bytes"] / c["images"], 0) for c in res.caches) + " |")
    out.append("| **total / features** | " + " | ".join(fmt(c["total_over_features"], 2, "×") for c in res.caches) + " |")
    out.append("| total cache, MB | " + " | ".join(fmt(c["total_bytes"] / 1e6, 1) for c in res.caches) + " |")
    return "\n".join(out)


def speedup(res, run, status):
    a, b = res.seconds(run), res.seconds(status)
    if a is None or b is None:
        return None, a, b
    if a == 0:
        return float("inf"), a, b  # a time too short to tell
    return b / a, a, b


def speedup_lines(res):
    lines = []
    for label, run, status in [(f"N={res.meta.get('n')}", "warm-run", "dvc-status"),
                               (f"BIG={res.meta.get('big')}", "big-warm-run", "big-dvc-status")]:
        x, a, b = speedup(res, run, status)
        if x is None:
            continue
        xs = f">{b / 0.01:.0f}" if x == float("inf") else f"{x:.1f}"
        lines.append(f"- {label}: warm `pipeline run` {fmt(a, 3)} s vs no-op `dvc status` {fmt(b, 3)} s: **{xs}× faster**")
    return "\n".join(lines) or "- not measured"


def targets(res):
    out = ["| target | measured | result |", "|---|---|---|"]

    def row(text, value, ok, detail=""):
        if value is None:
            out.append(f"| {text} | not measured{detail} | n/a |")
        else:
            out.append(f"| {text} | {value}{detail} | {'PASS' if ok else 'FAIL'} |")

    def ratio(a, b):
        ra, rb = res.rate(a), res.rate(b)
        return ra / rb if ra and rb else None

    r = ratio("cold-224", "ref1-224")
    row("cold 224: ≥ 4× reference, 1 process", fmt(r, 2, "×") if r else None, r is not None and r >= 4)
    r = ratio("cold-224", "floor2-224")
    row("cold 224: ≥ 0.8× decode floor, 2 workers", fmt(r, 2, "×") if r else None, r is not None and r >= 0.8)
    r = ratio("cold-64", "floor2-64")
    row("cold 64: ≥ 0.8× its decode floor, 2 workers", fmt(r, 2, "×") if r else None, r is not None and r >= 0.8)
    big = res.meta.get("big")
    t = res.seconds("big-warm-run")
    row(f"warm `pipeline run` on BIG ({big}) ≤ 0.3 s", fmt(t, 3, " s") if t is not None else None,
        t is not None and t <= 0.3)
    x, a, b = speedup(res, "big-warm-run", "big-dvc-status")
    detail = ""
    if x is None and res.seconds("big-warm-run") is not None and res.seconds("dvc-status") is not None:
        x, a, b = speedup(res, "big-warm-run", "dvc-status")
        detail = f" (dvc status on N={res.meta.get('n')}: not measured on BIG)"
    row("warm `pipeline run` on BIG ≥ 20× faster than no-op `dvc status`",
        (">" + fmt(b / 0.01, 0) + "×" if x == float("inf") else fmt(x, 1, "×")) if x is not None else None,
        x is not None and x >= 20, detail)
    a, b = res.seconds("inc-run"), res.seconds("cold-224")
    r = a / b if a is not None and b else None
    row("+1% rerun ≤ 10% of cold (224)",
        f"{fmt(a)} s / {fmt(b)} s = {r:.1%}" if r is not None else None, r is not None and r <= 0.10)
    m = res.get("big-cold")
    rss = m["rss_kb"] if m and m["seconds"] is not None else None
    row("peak RSS ≤ 1 GiB on BIG at 224", f"{rss / 1024:,.0f} MB" if rss is not None else None,
        rss is not None and rss <= 1024 * 1024)
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    res = Results(load(sys.argv[1]))
    m = res.meta
    v = m.get("versions", {})
    print(f"## pipeline benchmark: N={m.get('n')}, BIG={m.get('big')}, +1% = {m.get('add')} images\n")
    print(f"{m.get('date', '?')} · commit {m.get('commit', '?')}{' (uncommitted changes in src)' if m.get('dirty') else ''}"
          f" · binary {m.get('binary_sha256', '?')} built {m.get('binary_mtime', '?')} · {m.get('cores', '?')} cores"
          f" ({m.get('cpu', '?')}) · OpenCV {v.get('opencv', '?')}, NumPy {v.get('numpy', '?')},"
          f" DVC {v.get('dvc', '?')}\n")
    print("Wall seconds of the whole command (bash's microsecond clock) and its peak RSS (`/usr/bin/time -f %M`;"
          " for a 2-worker pool, RSS is the largest single process). images/s and the ratios are for rows"
          " that process every image; ratios compare images/s at the same size.\n")
    for ld in res.loads:
        if ld["busy_pct"] >= 20:
            print(f"**warning**: at the {ld['when']} of the benchmark the CPUs were {ld['busy_pct']:.0f}% busy"
                  f" with other work (load average {' '.join(ld['loadavg'])}): the timings are noisy.\n")
    print(measurement_table(res))
    print("\n*images/s in script*: the Python tools' own timing, without interpreter start-up and imports"
          " (about 0.3 s per process here, which matters at small N).")
    for c in res.checks:
        expect = "as expected: the pipeline stores RGB, OpenCV gives BGR" if c["best"] == "bgr" else \
            "UNEXPECTED: expected `bgr`"
        print(f"\nEquivalence check (`pipeline audit --compare` of the reference's features at 64x64): best"
              f" hypothesis `{c['best']}` ({expect}; {c['log']}).")
    print("\n### Cache bytes per image per stage (records in `artifacts/*.json`, divided by the image count)\n")
    print(cache_table(res))
    print("\n### Warm `pipeline run` vs no-op `dvc status`\n")
    print(speedup_lines(res))
    print("\n### Targets\n")
    if m.get("n") != 5000 or m.get("big") != 25000:
        print(f"(the targets are stated for N=5000, BIG=25000; this run used N={m.get('n')}, BIG={m.get('big')})\n")
    print(targets(res))


if __name__ == "__main__":
    main()
