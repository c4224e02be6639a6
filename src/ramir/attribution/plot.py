"""``mac.png``: the top layers as bars, and every layer's score along the network depth.

A ranking without scores (an imported ordered list) has nothing to draw as bars:
:func:`plot_ranking` lists its first names instead, and :func:`plot_mac` refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_mac", "plot_ranking"]


def plot_mac(
    scores: Mapping[str, float],
    path: str | Path,
    *,
    top_k: int = 30,
    selected: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw a layer analysis and save it as an image (matplotlib, Agg backend).

    Args:
        scores: layer name -> score in forward-pass order (as the analysis returns it).
            The bars follow :func:`ramir.attribution.ranked`: an imported ranking's own
            order (:class:`~ramir.attribution.io.LayerScores` ``rank``), else descending
            score, equal scores in depth order.
        path: output image (``.png``).
        top_k: number of first-ranked layers drawn as horizontal bars.
        selected: layers to highlight (e.g. the fine-tuned selection) in the depth plot.
        title: figure title.

    Returns:
        The path written.

    Raises:
        ValueError: no layers, or layers without scores (use :func:`plot_ranking`).
    """
    # The object-oriented API renders with Agg without touching pyplot's global backend.
    from matplotlib.figure import Figure

    from ramir.attribution.io import ranked

    if not scores:
        raise ValueError("plot_mac: no scores to plot")
    names = list(scores)
    values = [float(scores[n]) for n in names]
    if any(math.isnan(v) for v in values):
        raise ValueError(
            "plot_mac: this ranking has no scores to plot (an ordered list of names); "
            "plot_ranking lists it instead"
        )
    position = {n: i for i, n in enumerate(names)}
    order = [position[n] for n in ranked(scores)][: max(1, top_k)]
    fig = Figure(figsize=(15, max(4.5, 0.24 * len(order) + 1.5)))
    ax_top, ax_depth = fig.subplots(1, 2, width_ratios=[1, 1.3])
    ax_top.barh(range(len(order)), [values[i] for i in order], color="tab:blue")
    ax_top.set_yticks(range(len(order)), [f"{names[i]} (#{i})" for i in order], fontsize=7)
    ax_top.invert_yaxis()
    top_values = [values[i] for i in order]
    if min(top_values) > 0 and max(top_values) / min(top_values) > 100:
        ax_top.set_xscale("log")  # scores often span orders of magnitude
    ax_top.set_xlabel("score")
    ax_top.set_title(f"top {len(order)} of {len(names)} layers")
    ax_depth.plot(range(len(names)), values, lw=0.8, color="tab:gray")
    ax_depth.scatter(range(len(names)), values, s=6, color="tab:gray", label="layer")
    if selected:
        chosen = [i for i, n in enumerate(names) if n in set(selected)]
        ax_depth.scatter(
            chosen, [values[i] for i in chosen], s=14, color="tab:red",
            label=f"selected ({len(chosen)})",
        )  # fmt: skip
        ax_depth.legend(loc="best", fontsize=8)
    if all(v > 0 for v in values):
        ax_depth.set_yscale("log")
    ax_depth.set_xlabel("layer, in the order the forward pass runs them")
    ax_depth.set_ylabel("score")
    ax_depth.set_title("score along depth")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_ranking(
    names: Sequence[str],
    path: str | Path,
    *,
    top_k: int = 40,
    title: str | None = None,
    note: str | None = None,
) -> Path:
    """Draw a ranking that has no scores: its first ``top_k`` names, numbered, in order.

    Nothing is drawn as a score or a bar: the source gives only the order.

    Args:
        names: layer names, first-ranked first.
        path: output image (``.png``).
        top_k: how many names to list (the rest are counted).
        title: figure title.
        note: a line under the title (e.g. why there are no scores).

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    if not names:
        raise ValueError("plot_ranking: no names to list")
    shown = list(names)[: max(1, top_k)]
    lines = [f"{i + 1:>4}. {name}" for i, name in enumerate(shown)]
    if len(names) > len(shown):
        lines.append(f"      ... and {len(names) - len(shown)} more ({len(names)} in all)")
    fig = Figure(figsize=(9, 1.5 + 0.135 * len(lines)))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(
        f"first {len(shown)} of {len(names)} layers, in rank order (no scores)", fontsize=10
    )
    ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8, va="top",
            transform=ax.transAxes)  # fmt: skip
    if title or note:
        fig.suptitle("\n".join(t for t in (title, note) if t), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
