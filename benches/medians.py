#!/usr/bin/env python3
"""Prints the median of every criterion result as a markdown table.

Usage: python3 benches/medians.py [BASELINE] [CRITERION_DIR]
BASELINE defaults to `new` (the last run); CRITERION_DIR to target/criterion.
Throughput (MB/s, 10^6 bytes) is shown for benches that declare bytes.
"""
import json
import pathlib
import sys

baseline = sys.argv[1] if len(sys.argv) > 1 else "new"
root = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "target/criterion")


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


rows = []
for est in sorted(root.glob(f"*/*/{baseline}/estimates.json")):
    meta = json.loads((est.parent / "benchmark.json").read_text())
    e = json.loads(est.read_text())
    med = e["median"]["point_estimate"]
    lo = e["median"]["confidence_interval"]["lower_bound"]
    hi = e["median"]["confidence_interval"]["upper_bound"]
    tput = ""
    nbytes = (meta.get("throughput") or {}).get("Bytes")
    if nbytes:
        tput = f"{nbytes / med * 1e3:.0f} MB/s"
    rows.append((meta["full_id"], fmt_ns(med), f"{fmt_ns(lo)} .. {fmt_ns(hi)}", tput))

print("| bench | median | 95% CI of median | throughput |")
print("|---|---:|---|---:|")
for r in rows:
    print("| " + " | ".join(r) + " |")
