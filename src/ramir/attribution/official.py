"""Import the layer rankings that the official RAM release ships.

The release (``mac_analysis_result/``) stores one analysis as text files with one line
per layer, highest score first:

* ``filter_name.txt``: the layer's name (``layers.0.residual_group.blocks.0.norm2``);
* ``filter_cond.txt`` (``filter_mac.txt`` in later releases, ``filter_ig.txt`` for the
  integrated-gradients baseline): its score, rounded to 6 decimals;
* ``filter_index.txt``: its position in the network's layer order (0 = first layer).

RAM (``ram_swinir_mac/``, ``ram_promptir_mac/``) has the three. RAM++
(``ram_plus/{3,5,7}task_mac/``) fine-tunes from ``filter_name_RFR.txt``, an ordered list of
names without scores: its new RFR/DINO-side modules first, then the Restormer layers in
the order of ``filter_name.txt``. ``3task_mac`` and ``7task_mac`` hold both;
``5task_mac`` holds only the list (the same file as ``3task_mac``'s).

The release fine-tunes the first ``int(ratio * n)`` lines of the file it is given
(``ram/models/ram_finetune_model.py``): the rank order of the file, whatever the scores
say. Its scores do not decide ties either: they are rounded, and equal rounded scores
(36 adjacent pairs in RAM-SwinIR's file, 50 in RAM-PromptIR's) appear in the order the
release's sort left them. So an import keeps each layer's line as its ``rank``
(:class:`ramir.attribution.io.LayerScores`), and selection from the imported ``mac.json``
follows the rank: the top ``k`` are exactly the file's first ``k`` lines.

:func:`import_official_mac` turns a folder (or one list file) into a ramir ``mac.json``
(and its plot), so ``ramir finetune`` trains exactly the layers the paper selected.
ramir's layer names for RAM-SwinIR and RAM-PromptIR are the release's names (263 and 445
layers); RAM++'s ``filter_name.txt`` names the layers of ramir's ``restormer`` (406), but
its ``filter_name_RFR.txt`` names the 439 modules of RestormerRFR (``restormer_rfr``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ramir.attribution.io import LayerScores, save_mac, staged_outputs

__all__ = ["OfficialMac", "read_official_mac", "import_official_mac"]

log = logging.getLogger(__name__)

NAMES_FILE = "filter_name.txt"
SCORE_FILES = ("filter_cond.txt", "filter_mac.txt", "filter_ig.txt")
# Ordered lists of names without scores that a folder may hold instead of filter_name.txt.
LIST_FILES = ("filter_name_RFR.txt",)


@dataclass
class OfficialMac:
    """One official analysis.

    Attributes:
        ranking: the layer names in the release's order (line 1 first): the order its
            fine-tuning selects them in.
        scores: layer name -> score, in network-depth order (``filter_index.txt``; the
            file's order without it); ``None`` for an ordered list without scores.
        source: where it came from, for messages.
        depth_known: whether ``scores`` is in depth order (the folder has
            ``filter_index.txt``).
        note: what else the folder holds that this import did not take, if anything.
    """

    ranking: list[str]
    scores: dict[str, float] | None
    source: str
    depth_known: bool = False
    note: str | None = None

    @property
    def scored(self) -> bool:
        return self.scores is not None


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


def _names(path: Path) -> list[str]:
    """The layer names of a release list file, checked: one name per line, none twice."""
    names = _lines(path)
    if not names:
        raise ValueError(f"{path}: names no layer")
    for i, name in enumerate(names):
        if len(name.split()) > 1:
            raise ValueError(f"{path.name} line {i + 1}: more than one name: {name!r}")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path.name} names a layer twice: {', '.join(repeated[:5])}")
    return names


def _ranked_list(path: Path, source: str, note: str | None = None) -> OfficialMac:
    return OfficialMac(_names(path), None, source, depth_known=False, note=note)


def read_official_mac(path: str | Path) -> OfficialMac:
    """Read one official analysis: a folder, or one ordered list file.

    A folder with ``filter_name.txt`` and a score file (``filter_cond.txt``,
    ``filter_mac.txt`` or ``filter_ig.txt``), and ``filter_index.txt`` when present, is
    read as a scored analysis; one with ``filter_name.txt`` alone (what the release's
    ``random_analysis.py`` writes) or with only ``filter_name_RFR.txt`` (RAM++'s
    ``5task_mac``) as an ordered list without scores. A file (e.g.
    ``3task_mac/filter_name_RFR.txt``) is read as an ordered list without scores.

    Raises:
        FileNotFoundError: the path does not exist or the folder holds none of the files.
        ValueError: a file is not UTF-8 text (the message names it), the files disagree
            in length, a score is not a finite number, a name repeats, or the indices
            are not a permutation of ``0..n-1``.
    """
    path = Path(path)
    if path.is_file():
        return _ranked_list(path, f"{path.parent.name}/{path.name} (names only, no scores)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder or file")
    folder = path
    names_file = folder / NAMES_FILE
    lists = [f for f in LIST_FILES if (folder / f).is_file()]
    if not names_file.is_file():
        if lists:
            return _ranked_list(
                folder / lists[0], f"{folder.name} ({lists[0]}, names only, no scores)"
            )
        raise FileNotFoundError(
            f"{folder} holds no {NAMES_FILE} (nor {' or '.join(LIST_FILES)}): give the folder "
            "of one official analysis, e.g. mac_analysis_result/ram_swinir_mac, or one list "
            "file, e.g. mac_analysis_result/ram_plus/3task_mac/filter_name_RFR.txt"
        )
    note = None
    if lists:
        note = (
            f"{folder.name} also holds {', '.join(lists)}, the ordered list RAM++'s "
            f"fine-tuning reads; this import is its scored {NAMES_FILE}. To fine-tune as "
            f"RAM++ does, import the list itself: --import {folder / lists[0]}"
        )
    scores_file = next((folder / f for f in SCORE_FILES if (folder / f).is_file()), None)
    if scores_file is None:
        return _ranked_list(names_file, f"{folder.name} ({NAMES_FILE}, no scores)", note)
    names = _names(names_file)
    raw_scores = _lines(scores_file)
    if len(names) != len(raw_scores):
        raise ValueError(
            f"{names_file.name} lists {len(names)} layers but {scores_file.name} "
            f"{len(raw_scores)} scores"
        )
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
    return OfficialMac(
        names,
        by_depth,
        f"{folder.name} ({names_file.name}, {scores_file.name})",
        depth_known=index_file.is_file(),
        note=note,
    )


def _check_names(mac: OfficialMac, arch: str) -> None:
    """Raise unless every name of ``mac`` is a layer of the network ``arch``."""
    import torch

    from ramir.attribution.selection import list_layers
    from ramir.errors import UnknownNameError
    from ramir.models import build_model, list_models

    rfr = [m for m in list_models() if "rfr" in m.lower()]
    rfr_note = (
        f"RAM++'s RestormerRFR is {', '.join(map(repr, rfr))}"
        if rfr
        else "the RAM++ networks (RestormerRFR and its DINO-side modules) are not in "
        "ramir yet, so import a RAM++ list without --arch"
    )
    try:
        with torch.device("meta"):  # names only: nothing allocated
            layers = set(list_layers(build_model(arch)))
    except UnknownNameError as e:
        raise UnknownNameError(
            f"cannot check the layer names of {mac.source} against {arch!r}: {e}. Only a "
            f"network ramir has can be checked; {rfr_note}"
        ) from None
    unknown = [n for n in mac.ranking if n not in layers]
    if unknown:
        hint = (
            f" (filter_name_RFR.txt names the modules of RAM++'s RestormerRFR, its "
            f"DINO-side fusion and adaptation first; {rfr_note})"
            if "RFR" in mac.source
            else ""
        )
        raise ValueError(
            f"{len(unknown)} layer(s) of {mac.source} are not layers of {arch!r}: "
            f"{', '.join(unknown[:5])}; is it the analysis of another network?{hint}"
        )


def import_official_mac(
    folder: str | Path, out_dir: str | Path, arch: str | None = None
) -> tuple[Path, Path]:
    """Write ``out_dir/mac.json`` and ``out_dir/mac.png`` from an official analysis.

    ``folder`` is an analysis folder or one ordered list file (see
    :func:`read_official_mac`). Every layer keeps its line in the release's file as its
    ``rank`` (``"ranked_by": "rank"``), so ``ramir finetune`` with ``select.mac`` = this
    ``mac.json`` and a ratio trains exactly the release's first ``floor(ratio * n)``
    lines. An ordered list without scores is written with ``"score": null``; its plot
    lists the names in order and draws no scores.

    ``arch`` (e.g. ``ram_swinir``, at its paper size) checks that every layer name exists
    in that network, so a ranking is never applied to the wrong model; it must be a
    network ramir has (RAM++'s ``filter_name_RFR.txt``: ``restormer_rfr``).

    Everything is read, checked and drawn before anything is written; both files are then
    moved into place together (:func:`ramir.attribution.io.staged_outputs`), so a failed
    import leaves ``out_dir`` as it was.

    Returns:
        The paths of ``mac.json`` and ``mac.png``.
    """
    from ramir.attribution.plot import plot_mac, plot_ranking

    mac = read_official_mac(folder)
    model_info: dict[str, object] = {"source": "official RAM release"}
    if arch is not None:
        _check_names(mac, arch)
        model_info["arch"] = arch
    if mac.note:
        log.warning("%s", mac.note)
    rank = {name: i for i, name in enumerate(mac.ranking)}
    params: dict[str, object] = {
        "imported_from": mac.source,
        "ranking": "the release's order: rank r is line r + 1 of the release's file, and "
        "selection takes the first floor(ratio * n) ranks, as the release's fine-tuning does",
    }
    if mac.scores is not None:
        scores = LayerScores(mac.scores, rank=rank)
        method = "ig" if "filter_ig.txt" in mac.source else "mac"
    else:
        scores = LayerScores({name: math.nan for name in mac.ranking}, rank=rank)
        method = "ranked list"
        params["scores"] = (
            "none: the release gives only this ordered list of names (first = fine-tuned "
            "first), so each layer's score is null and the order is the rank"
        )
    if mac.note:
        params["note"] = mac.note
    out_dir = Path(out_dir)
    with staged_outputs(out_dir, "mac.png", "mac.json") as (plot_tmp, json_tmp):
        if mac.scores is not None:
            plot_mac(scores, plot_tmp, title=f"MAC (official release): {mac.source}")
        else:
            plot_ranking(
                mac.ranking,
                plot_tmp,
                title=f"Ranking (official release): {mac.source}",
                note="no scores: the release gives only this ordered list of names; "
                "fine-tuning at ratio r takes the first floor(r * n)",
            )
        save_mac(
            json_tmp,
            scores,
            method=method,
            params=params,
            model_info=model_info,
            checkpoint_hash=None,
            depth_known=mac.depth_known,
        )
    return out_dir / "mac.json", out_dir / "mac.png"
