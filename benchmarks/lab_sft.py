"""Lab SFT benchmark: greedy accuracy on held-out questions after a fixed step budget, for
several trajectory styles, plus training throughput. Runs `metareason train` once per style
(sequentially, so timings are not shared), then writes a markdown table and JSON.

    python benchmarks/lab_sft.py --styles long short none --steps 500 --out runs/bench-lab-sft

Each run's own directory (metrics.jsonl, summary.json, checkpoints) stays under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--styles", nargs="+", default=["long", "short", "none"])
    ap.add_argument("--family", default="arith", help="preset family: presets are '<family>-<style>'")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-lab-sft"))
    ap.add_argument("extra", nargs="*", help="more `metareason train` flags, after --")
    args = ap.parse_args()
    rows = []
    for style in args.styles:
        run = args.out / f"{args.family}-{style}"
        cmd = [sys.executable, "-m", "metareason.cli", "train", "--preset", f"{args.family}-{style}",
               "--steps", str(args.steps), "--out", str(run), *args.extra]
        if (run / "summary.json").exists():
            print(f"{run} already done; reusing it")
        else:
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            (run / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        summary = json.loads((run / "summary.json").read_text())
        train_rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        tps = [r["trained_tokens_per_s"] for r in train_rows if r["split"] == "train"]
        rows.append({"style": style, "steps": args.steps, "wall_s": float((run / "wall_seconds.txt").read_text()),
                     "trained_tokens_per_s": tps[-1] if tps else None,
                     "test_accuracy": summary["test"]["accuracy"], "test_format_rate": summary["test"]["format_rate"],
                     "mean_output_tokens": summary["test"]["mean_length"],
                     "per_family": {f: r["accuracy"] for f, r in summary["test"]["per_family"].items()},
                     "n_test": summary["test"]["n"]})
    result = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "family": args.family, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print("| style | steps | wall (s) | trained tokens/s | test accuracy | format rate | mean output tokens |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['style']} | {r['steps']} | {r['wall_s']:.0f} | {r['trained_tokens_per_s']:.0f} | "
              f"{r['test_accuracy']:.3f} (n={r['n_test']}) | {r['test_format_rate']:.2f} | {r['mean_output_tokens']:.0f} |")


if __name__ == "__main__":
    main()
