"""Figures for the probe analyses (matplotlib, Agg backend; each function writes one PNG and
returns its path). They mirror the paper's Figs 2 (landscape), 3 (descent curves), 5 (thinking
vs no thinking), 6 (token types), 10/11 (efficiency) and 16 (incorrect trajectories)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["pyplot", "save_figure", "plot_bands", "plot_examples", "plot_token_types", "plot_landscape", "plot_efficiency"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported only when a figure is drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path) -> Path:
    """Writes `fig` to the PNG `path` (its folder created; tight layout, 120 dpi), closes it, returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def plot_bands(bands: Mapping[str, dict], path, *, title: str, ylabel: str = "answer NLL (L-hat)") -> Path:
    """Mean curves with confidence bands (from `analysis.mean_band`), one per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, b in bands.items():
        if not b["n"]:
            continue
        line, = ax.plot(b["x"], b["mean"], label=f"{label} (n={b['n']})")
        ax.fill_between(b["x"], b["low"], b["high"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("normalised token index")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def plot_examples(curves: Sequence[dict], path, *, title: str, alpha: float | None = None,
                  mark: Sequence[str] = ("reflection", "delimiter")) -> Path:
    """Individual L-hat curves against token index, with tokens of the types in `mark` marked."""
    from metareason.probe.analysis import ema

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    markers = {"reflection": "v", "connective": "^", "delimiter": "s"}
    for c in curves:
        y = ema(c["loss"], alpha) if alpha else np.asarray(c["loss"])
        line, = ax.plot(c["k"], y, lw=1)
        k = np.asarray(c["k"])
        for typ in mark:
            idx = [i + 1 for i, t in enumerate(c["types"]) if t == typ and (i + 1) in set(k.tolist())]
            pos = [int(np.flatnonzero(k == i)[0]) for i in idx]
            ax.scatter(idx, y[pos], marker=markers.get(typ, "o"), color=line.get_color(), s=25, zorder=3)
    for typ in mark:
        ax.scatter([], [], marker=markers.get(typ, "o"), color="gray", label=f"after a {typ} token")
    ax.set_xlabel("trajectory tokens seen")
    ax.set_ylabel("answer NLL (L-hat)")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def plot_token_types(stats: dict, path, *, title: str = "relative change of L-hat by token type") -> Path:
    """Bars: mean |L_i - L_(i-1)| / L_(i-1) caused by each token type (the paper's statistic, 95%
    CI) with the median marked, from `analysis.token_type_changes`, on a log scale (the mean is
    dominated by tokens after which L-hat is near 0); right: the same at offsets around reflection words."""
    plt = pyplot()
    types = [t for t in stats if t not in ("ratio",)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    means = np.array([stats[t][0][0] for t in types])
    lo = np.array([max(stats[t][0][1], 1e-6) for t in types])
    hi = np.array([stats[t][0][2] for t in types])
    ax.bar(types, means, yerr=[means - np.minimum(lo, means), hi - means], capsize=3,
           color=["C3" if t == "reflection" else "C0" for t in types], label="mean (95% CI)")
    ax.scatter(types, [stats[t][0][4] for t in types], marker="D", color="black", zorder=3, label="median")
    ax.set_yscale("log")
    ax.set_ylabel("relative change of L-hat")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    if "reflection" in stats:
        offs = sorted(stats["reflection"])
        ax2.plot(offs, [stats["reflection"][o][0] for o in offs], marker="o", color="C3", label="mean")
        ax2.plot(offs, [stats["reflection"][o][4] for o in offs], marker="D", color="black", label="median")
        ax2.axhline(stats["all"][0][0], color="C3", ls="--", lw=1, label="mean, all tokens")
        ax2.axhline(stats["all"][0][4], color="black", ls="--", lw=1, label="median, all tokens")
        ax2.set_yscale("log")
        ax2.set_xlabel("offset from the reflection word (tokens)")
        ax2.set_ylabel("relative change of L-hat")
        ax2.set_title("around reflection words")
        ax2.legend(fontsize=8)
    return save_figure(fig, path)


def plot_landscape(surface: np.ndarray, alphas, betas, path, *, points: np.ndarray | None = None,
                   title: str = "answer-loss landscape (question only)") -> Path:
    """Contours of the surface over (a, b), theta marked, and the placed trajectory path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    A, B = np.meshgrid(alphas, betas, indexing="ij")
    cs = ax.contourf(A, B, surface, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="answer NLL")
    ax.scatter([0], [0], marker="*", s=120, color="white", edgecolor="black", zorder=3, label="theta")
    if points is not None and len(points):
        ax.plot(points[:, 0], points[:, 1], color="red", lw=1.5, marker=".", ms=4,
                label="trajectory L-hat (placed)")
    ax.set_xlabel("a (direction 1)")
    ax.set_ylabel("b (direction 2)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)


def plot_efficiency(rows: Sequence[dict], path, *, title: str = "accuracy at equal thinking tokens") -> Path:
    """Accuracy against mean thinking tokens: the budget-forcing curve, summaries, no thinking."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bud = [r for r in rows if r["mode"] in ("none", "budget", "full")]
    ax.plot([r["mean_tokens"] for r in bud], [r["accuracy"] for r in bud], marker="o", label="budget forcing")
    styles = {"none": ("s", "C2", "no thinking"), "summary": ("D", "C3", "summarised trajectory"),
              "full": ("^", "C1", "full thinking")}
    for r in rows:
        if r["mode"] in styles:
            m, c, label = styles[r["mode"]]
            ax.scatter([r["mean_tokens"]], [r["accuracy"]], marker=m, color=c, s=60, zorder=3, label=label)
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel("greedy accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)
