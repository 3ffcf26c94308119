"""One summary table of benchmark JSONs (what benchmarks/gpu.sh and tpu.sh write), with the
issue-19 targets beside the numbers.

    python benchmarks/summary.py OUTDIR                 # every *.json in OUTDIR
    python benchmarks/summary.py a.json b.json --markdown

Each JSON is recognised by its keys (the benchmark that wrote it): sample.py (decoding: tokens/s,
the fraction of the memory-bandwidth bound on a GPU), train_step.py (SFT step: MFU), forward.py,
probe.py (the one-pass probe against per-prefix forwards and one plain forward) and grpo_tunix.py
(the GRPO step against Tunix). Other JSONs are listed as skipped. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HEADER = ("row", "device", "ours", "peer", "ours/peer", "vs hardware", "target")


def _f(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


def _device(d):
    return str(d.get("device", d.get("backend", "?")))


BANDWIDTH: float | None = None  # --bandwidth: HBM bytes/s for results that lack the bound (TPU)


def _bound_fraction(d):
    """The fraction of the memory-bandwidth bound sample.py reports on a GPU, or (--bandwidth) the
    same bound computed here from sample.py's own formula and preset (e.g. on a TPU)."""
    frac = d["ours"].get("fraction_of_bandwidth_bound")
    if frac is None and BANDWIDTH:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from sample import PRESETS, bandwidth_bound  # jax, metareason: only here
        bound = bandwidth_bound(PRESETS[d["preset"]]["config"], d["batch"], d["prompt"], d["new_tokens"], BANDWIDTH)
        frac = d["ours"]["tokens_per_s"] / bound
    return frac


def sample_rows(d):
    o, t = d["ours"], d.get("transformers") or {}
    frac = _bound_fraction(d)
    target = ">= 70% of bound" if d.get("batch") == 32 and d.get("backend") != "cpu" else ""
    return [(f"decode B={d['batch']} ({d['preset']}, {d['prompt']}+{d['new_tokens']} tok)", _device(d),
             f"{_f(o['tokens_per_s'])} tok/s", f"{_f(t.get('tokens_per_s'))} tok/s (transformers)",
             _f(d.get("ratio_ours_over_transformers"), "{:.2f}x"),
             f"{frac:.0%} of bandwidth bound" if frac is not None else "-", target)]


def train_step_rows(d):
    t = d.get("transformers") or {}
    rows = []
    for name, o in d["ours"].items():
        if not isinstance(o, dict) or "mfu" not in o:
            continue
        rows.append((f"SFT step {name} ({d['preset']}, {d['batch']}x{d['seq']})", _device(d),
                     f"MFU {o['mfu']:.1%}", f"MFU {t['mfu']:.1%} (transformers)" if "mfu" in t else "-",
                     _f(o.get("speedup_vs_transformers"), "{:.2f}x"),
                     _f(o.get("fraction_of_matmul_peak"), "{:.0%} of matmul peak"),
                     ">= 55% MFU" if d.get("backend") != "cpu" else ""))
    return rows


def forward_rows(d):
    t = d.get("transformers") or {}
    return [(f"forward {impl} ({d['preset']}, {d['batch']}x{d['seq']})", _device(d),
             f"{_f(o['tokens_per_s'])} tok/s", f"{_f(t.get('tokens_per_s'))} tok/s (transformers)",
             _f(o.get("speedup_vs_transformers"), "{:.2f}x"), _f(o.get("tflops"), "{:.0f} TFLOP/s"), "")
            for impl, o in d["ours"].items() if isinstance(o, dict) and "tokens_per_s" in o]


def probe_rows(d):
    s, sp = d["seconds"], d.get("speedup", {})
    rows = []
    for m in ("cache", "packed"):
        if m not in s:
            continue
        peer = s.get("transformers_per_prefix")
        rows.append((f"probe {m} ({d['preset']}, q{d['question']}+t{d['trajectory']}, {d['cuts']} cuts, "
                     f"{d.get('impl', '?')})", _device(d), f"{s[m] * 1e3:,.1f} ms",
                     f"{peer * 1e3:,.1f} ms (transformers per prefix)" if peer else "-",
                     _f(sp.get(f"{m}_vs_transformers_per_prefix"), "{:.1f}x"),
                     _f(sp.get(f"{m}_over_one_forward"), "{:.2f}x one forward"), "<= 1.5x one forward"))
    return rows


def grpo_rows(d):
    o, t, s = d["ours"], d["tunix"], d.get("settings", {})
    load = (d.get("loadavg_before") or d.get("loadavg") or [None])[0]
    name = (f"GRPO step ({d.get('model')} Qwen2, Q{s.get('questions')} G{s.get('group')} N{s.get('new')}, "
            f"{s.get('repeats')} reps" + (f", load {load:.3g})" if load is not None else ")"))
    return [(name, _device(d), f"{o['step_s_median']:.3f} s", f"{t['step_s_median']:.3f} s (Tunix)",
             f"{d['ratio_step']:.2f}x", "-", ">= 2x on the CPU" if d.get("backend") == "cpu" else ""),
            (f"GRPO rollout tokens/s ({d.get('model')})", _device(d), f"{_f(o['rollout_tokens_per_s'])} tok/s",
             f"{_f(t['rollout_tokens_per_s'])} tok/s (Tunix)", f"{d['ratio_rollout_tokens_per_s']:.2f}x", "-",
             ">= 2x on the CPU" if d.get("backend") == "cpu" else "")] + _grpo_rest(d)


def _grpo_rest(d):
    """The step less its rollout (log-probs + updates), from the per-repeat times."""
    o, t = d["ours"], d["tunix"]
    if not all(k in x for x in (o, t) for k in ("step_s", "rollout_s")):
        return []
    rest = [(ts - tr) / (os_ - or_) for os_, or_, ts, tr in zip(o["step_s"], o["rollout_s"], t["step_s"], t["rollout_s"])]
    rest.sort()
    mid = len(rest) // 2
    ratio = rest[mid] if len(rest) % 2 else (rest[mid - 1] + rest[mid]) / 2
    med = [sorted(a - b for a, b in zip(x["step_s"], x["rollout_s"])) for x in (o, t)]
    return [(f"GRPO rest of step ({d.get('model')}: log-probs + updates)", _device(d), f"{med[0][len(med[0]) // 2]:.3f} s",
             f"{med[1][len(med[1]) // 2]:.3f} s (Tunix)", f"{ratio:.2f}x", "-", "")]


KINDS = [  # (keys that identify the writer, rows)
    (("ratio_step", "tunix"), grpo_rows),
    (("cuts", "seconds", "trajectory"), probe_rows),
    (("new_tokens", "ours"), sample_rows),
    (("step_tflop", "ours"), train_step_rows),
    (("forward_tflop", "ours"), forward_rows),
]


def rows_of(path: Path):
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{path.name}: unreadable ({e})"
    if not isinstance(d, dict):
        return None, f"{path.name}: not a benchmark result"
    for keys, fn in KINDS:
        if all(k in d for k in keys):
            try:
                return fn(d), None
            except (KeyError, TypeError) as e:
                return None, f"{path.name}: missing field {e}"
    return None, f"{path.name}: not a known benchmark result"


def render(rows, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="JSON files or folders of them")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--bandwidth", type=float,
                    help="HBM bytes/s: the decoding bound for results that lack it (TPU: v5e 8.19e11, v5p 2.765e12, "
                         "v6e 1.64e12)")
    a = ap.parse_args(argv)
    global BANDWIDTH
    BANDWIDTH = a.bandwidth
    files = []
    for p in a.paths:
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    rows, skipped = [], []
    for f in files:
        r, why = rows_of(f)
        rows += r or []
        if why:
            skipped.append(why)
    print(render(rows, a.markdown) if rows else "no benchmark results found")
    for s in skipped:
        print(f"  (skipped {s})", file=sys.stderr)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
