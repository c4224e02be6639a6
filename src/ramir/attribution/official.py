"""Import the layer rankings that the official RAM release ships.

The release (``mac_analysis_result/ram_swinir_mac/`` and ``ram_promptir_mac/``) stores one
analysis as three text files with one line per layer, highest score first:

* ``filter_name.txt``: the layer's name (``layers.0.residual_group.blocks.0.norm2``);
* ``filter_cond.txt`` (``filter_mac.txt`` in later releases): its conductance score;
* ``filter_index.txt``: its position in the network's layer order (0 = first layer).

:func:`import_official_mac` turns such a folder into a ramir ``mac.json`` (and its plot),
so ``ramir finetune`` can train exactly the layers the paper selected. ramir's layer names
for RAM-SwinIR and RAM-PromptIR are the release's names (263 and 445 layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ramir.attribution.io import save_mac, staged_outputs

__all__ = ["OfficialMac", "read_official_mac", "import_official_mac"]

SCORE_FILES = ("filter_cond.txt", "filter_mac.txt")


@dataclass
class OfficialMac:
    """One official analysis: ``scores`` (layer name -> score, in network-depth order)
    and a label of where it came from."""

    scores: dict[str, float]
    source: str


def _lines(path: Path) -> list[str]:
    """The non-blank lines of a release text file (UTF-8, a leading BOM dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "the release's files are plain text, one entry per line"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_official_mac(folder: str | Path) -> OfficialMac:
    """Read ``filter_name.txt``, the scores and (when present) ``filter_index.txt``.

    Raises:
        FileNotFoundError: the folder lacks the names or the scores file.
        ValueError: a file is not UTF-8 text (the message names it), the files disagree
            in length, a score is not a finite number, a name repeats, or the indices
            are not a permutation of ``0..n-1``.
    """
    folder = Path(folder)
    names_file = folder / "filter_name.txt"
    if not names_file.is_file():
        raise FileNotFoundError(
            f"{folder} holds no filter_name.txt: give the folder of one official analysis, "
            "e.g. mac_analysis_result/ram_swinir_mac"
        )
    scores_file = next((folder / f for f in SCORE_FILES if (folder / f).is_file()), None)
    if scores_file is None:
        raise FileNotFoundError(f"{folder} holds no {' or '.join(SCORE_FILES)}")
    names = _lines(names_file)
    raw_scores = _lines(scores_file)
    if len(names) != len(raw_scores):
        raise ValueError(
            f"{names_file.name} lists {len(names)} layers but {scores_file.name} "
            f"{len(raw_scores)} scores"
        )
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{names_file.name} names a layer twice: {', '.join(repeated[:5])}")
    scores: list[float] = []
    for i, text in enumerate(raw_scores):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{scores_file.name} line {i + 1}: not a number: {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{scores_file.name} line {i + 1}: score is not finite ({text})")
        scores.append(value)
    order = list(range(len(names)))
    index_file = folder / "filter_index.txt"
    if index_file.is_file():
        try:
            index = [int(t) for t in _lines(index_file)]
        except ValueError:
            raise ValueError(f"{index_file.name}: every line must be an integer") from None
        if sorted(index) != list(range(len(names))):
            raise ValueError(
                f"{index_file.name} must hold each position 0..{len(names) - 1} once, as "
                f"{names_file.name} has {len(names)} layers"
            )
        order = sorted(range(len(names)), key=lambda i: index[i])
    by_depth = {names[i]: scores[i] for i in order}
    return OfficialMac(by_depth, f"{folder.name} ({names_file.name}, {scores_file.name})")


def import_official_mac(
    folder: str | Path, out_dir: str | Path, arch: str | None = None
) -> tuple[Path, Path]:
    """Write ``out_dir/mac.json`` and ``out_dir/mac.png`` from an official analysis folder.

    ``arch`` (e.g. ``ram_swinir``, at its paper size) checks that every layer name exists
    in that network, so a ranking is never applied to the wrong model.

    Everything is read, checked and drawn before anything is written; both files are then
    moved into place together (:func:`ramir.attribution.io.staged_outputs`), so a failed
    import leaves ``out_dir`` as it was.

    Returns:
        The paths of ``mac.json`` and ``mac.png``.
    """
    from ramir.attribution.plot import plot_mac

    mac = read_official_mac(folder)
    model_info: dict[str, object] = {"source": "official RAM release"}
    if arch is not None:
        import torch

        from ramir.attribution.selection import list_layers
        from ramir.models import build_model

        with torch.device("meta"):  # names only: nothing allocated
            layers = set(list_layers(build_model(arch)))
        unknown = [n for n in mac.scores if n not in layers]
        if unknown:
            raise ValueError(
                f"{len(unknown)} layer(s) of {mac.source} are not layers of {arch!r}: "
                f"{', '.join(unknown[:5])}; is it the analysis of another network?"
            )
        model_info["arch"] = arch
    out_dir = Path(out_dir)
    with staged_outputs(out_dir, "mac.png", "mac.json") as (plot_tmp, json_tmp):
        plot_mac(mac.scores, plot_tmp, title=f"MAC (official release): {mac.source}")
        save_mac(
            json_tmp,
            mac.scores,
            method="mac",
            params={"imported_from": mac.source},
            model_info=model_info,
            checkpoint_hash=None,
        )
    return out_dir / "mac.json", out_dir / "mac.png"
