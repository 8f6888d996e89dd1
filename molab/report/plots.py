"""The report's figures, as PNG data URIs from matplotlib.

PNG rather than a JavaScript plotting library: the page must work from disk with no network,
and a bundled JS library would add hundreds of kilobytes to every report for figures nobody
needs to zoom. matplotlib renders headless (Agg) on any machine molab runs on.
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TRAIN_COLOUR, TEST_COLOUR = "#4C72B0", "#DD8452"


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _err(rate, ci) -> list[float]:
    if rate is None or ci[0] is None:
        return [0.0, 0.0]
    return [max(0.0, rate - ci[0]), max(0.0, ci[1] - rate)]


def headline(rows: list[dict]) -> str:
    """Grouped bars: train and test exploitation per checkpoint, with 95% intervals.
    `rows`: {"checkpoint", "train": {"rate", "ci"}, "test": {...}}."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(len(rows))
    for offset, group, colour in ((-0.18, "train", TRAIN_COLOUR), (0.18, "test", TEST_COLOUR)):
        rates = [r[group]["rate"] or 0.0 for r in rows]
        errs = np.array([_err(r[group]["rate"], r[group]["ci"]) for r in rows]).T
        ax.bar(x + offset, rates, 0.34, yerr=errs, capsize=3, color=colour, label=f"{group} biases")
    ax.set_xticks(x, [r["checkpoint"] for r in rows])
    ax.set_ylabel("exploitation rate")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def heatmap(labels: list[str], checkpoints: list[str], values: list[list[float | None]]) -> str:
    """Bias x checkpoint exploitation rates (blank where not measured)."""
    grid = np.array([[math.nan if v is None else v for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(checkpoints), 0.8 + 0.24 * len(labels)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(checkpoints)), checkpoints)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not math.isnan(grid[i, j]):
                colour = "black" if grid[i, j] > 0.6 else "white"
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _uri(fig)


def curves(series: dict[str, list[tuple[float, float]]], ylabel: str) -> str:
    """One line per training stage (step, value)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=name, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def timings(stages: list[tuple[str, float]]) -> str:
    """Horizontal bars of each stage's wall time in minutes."""
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.28 * len(stages)))
    names = [s for s, _ in stages]
    ax.barh(range(len(stages)), [t / 60 for _, t in stages], color="#55A868")
    ax.set_yticks(range(len(stages)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("minutes")
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)
