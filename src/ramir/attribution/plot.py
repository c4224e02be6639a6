"""``mac.png``: the top layers as bars, and every layer's score along the network depth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_mac"]


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
        path: output image (``.png``).
        top_k: number of highest-scoring layers drawn as horizontal bars.
        selected: layers to highlight (e.g. the fine-tuned selection) in the depth plot.
        title: figure title.

    Returns:
        The path written.
    """
    # The object-oriented API renders with Agg without touching pyplot's global backend.
    from matplotlib.figure import Figure

    if not scores:
        raise ValueError("plot_mac: no scores to plot")
    names = list(scores)
    values = [float(scores[n]) for n in names]
    order = sorted(range(len(names)), key=lambda i: -values[i])[: max(1, top_k)]
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
