"""``mac.json``: the result of a layer analysis, readable by people and by ``ramir finetune``.

Layout::

    {
      "format": "ramir-mac", "format_version": 1,
      "method": "mac" | "ig" | "random",
      "parameters": {"steps": 200, "start_ratio": 0.5, "sharpness": 10000.0, ...},
      "model": {"arch": "ram_swinir", "arch_kwargs": {...}, "n_layers": 263, ...},
      "checkpoint": {"path": "...", "sha256": "..."},
      "config": {... the resolved analysis config ...},
      "ranked_by": "score" | "rank",
      "layers": [{"layer": "conv_last", "score": 1.2e-3, "n_params": 4863, "index": 262}, ...]
    }

``index`` is the layer's position along the network depth (the order the analysis
returned the layers in: for ``ramir analyze``, the order the forward pass runs them;
``null`` where the source does not give it).

``ranked_by`` says what orders the layers, and therefore what fine-tuning selects:

* ``"score"`` (ramir's own analyses; files without the key): descending ``score``;
  equal scores keep the ``index`` order (shallower first). ``layers`` is written in this
  order.
* ``"rank"`` (imported rankings, :mod:`ramir.attribution.official`): every entry has a
  ``"rank"`` (0 = selected first; for a release folder, the line of ``filter_name.txt``
  minus one), which decides the order whatever the scores say, so the top ``k`` are
  exactly the source's first ``k``. ``score`` is ``null`` in every entry when the source
  gives no scores (an ordered list such as RAM++'s ``filter_name_RFR.txt``). ``layers``
  is written in rank order.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAC_FORMAT",
    "LayerScores",
    "MacResult",
    "save_mac",
    "load_mac",
    "ranked",
    "staged_outputs",
]

MAC_FORMAT = "ramir-mac"
MAC_FORMAT_VERSION = 1


class LayerScores(dict[str, float]):
    """Layer name -> score, plus the explicit ranking to select by, if there is one.

    A ``dict`` (in network-depth order where that is known) with one attribute, ``rank``:
    ``None`` (the layers rank by descending score, equal scores in dict order), or layer
    name -> position in the ranking (0 = selected first) for a ranking imported from
    elsewhere. :func:`ranked` and :func:`ramir.attribution.select_layers` then follow
    ``rank`` and ignore the scores, so an imported ranking is selected exactly in its own
    order, ties and all. A score is ``nan`` where the ranking has none (``scored`` is
    ``False``; only possible with ``rank``). ``dict(scores)`` drops the rank.
    """

    rank: dict[str, int] | None

    def __init__(
        self,
        scores: Mapping[str, float] | Iterable[tuple[str, float]] = (),
        rank: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(scores)
        if rank is not None:
            rank = {str(name): int(pos) for name, pos in rank.items()}
            if set(rank) != set(self) or sorted(rank.values()) != list(range(len(self))):
                raise ValueError(
                    f"a rank must give each of the {len(self)} layers one position 0..{len(self) - 1}"
                )
        elif any(math.isnan(float(v)) for v in self.values()):
            raise ValueError("scores without a rank must all be numbers (one is nan)")
        self.rank = rank

    @property
    def scored(self) -> bool:
        """Whether every layer has a score (``False`` for an ordered list without scores)."""
        return not any(math.isnan(float(v)) for v in self.values())

    def __repr__(self) -> str:
        return f"LayerScores({dict.__repr__(self)}, rank={self.rank!r})"


@dataclass
class MacResult:
    """A loaded ``mac.json``.

    ``scores`` maps layer name -> score in network-depth order (as the analysis returned
    them; an imported list without depth positions keeps its own order) and carries the
    file's rank, if any (:class:`LayerScores`); ``ranking()`` gives the names in selection
    order.
    """

    method: str
    scores: LayerScores
    n_params: dict[str, int | None] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Layer names in selection order (descending score, or the imported rank)."""
        return ranked(self.scores)

    @property
    def rank(self) -> dict[str, int] | None:
        """Layer name -> position (0 = first) of an imported ranking; ``None`` otherwise."""
        return getattr(self.scores, "rank", None)

    @property
    def scored(self) -> bool:
        """Whether the layers have scores (an imported ordered list may have none)."""
        return getattr(self.scores, "scored", True)


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Layer names in selection order, first selected first.

    With an explicit rank (:class:`LayerScores` ``rank``), by that rank; otherwise by
    descending score, equal scores keeping the order of ``scores`` (stable sort: for a
    ``mac.json``, network depth, shallower first).
    """
    rank = getattr(scores, "rank", None)
    if rank is not None:
        return sorted(scores, key=rank.__getitem__)
    return [n for n, _ in sorted(scores.items(), key=lambda kv: -float(kv[1]))]


def save_mac(
    path: str | Path,
    scores: Mapping[str, float],
    *,
    method: str,
    params: Mapping[str, Any],
    model_info: Mapping[str, Any],
    checkpoint_hash: str | None,
    config: Mapping[str, Any] | None = None,
    checkpoint_path: str | None = None,
    n_params: Mapping[str, int] | None = None,
    depth_known: bool = True,
) -> Path:
    """Write a ``mac.json`` (atomically); return its path.

    Args:
        path: destination file.
        scores: layer name -> score, in network-depth order. A :class:`LayerScores` with
            a ``rank`` is written ``"ranked_by": "rank"``, each layer with its rank, in
            rank order; its scores may then all be ``nan`` (a ranking without scores,
            written as ``null``).
        method: ``"mac"``, ``"ig"`` or ``"random"`` (free text is accepted).
        params: the attribution parameters (steps, start_ratio, sharpness, seed, images...).
        model_info: architecture name, constructor arguments, parameter count...
        checkpoint_hash: SHA-256 of the analysed checkpoint (``None`` if there is none).
        config: the resolved config of the run.
        checkpoint_path: where the checkpoint was read from.
        n_params: layer name -> parameters it owns (see ``layer_param_counts``).
        depth_known: ``False`` when ``scores`` is not in network-depth order (a ranked list
            that gives no positions): ``index`` is then written as ``null``.
    """
    rank = getattr(scores, "rank", None)
    values = {name: float(s) for name, s in scores.items()}
    unscored = rank is not None and all(math.isnan(v) for v in values.values())
    if not unscored:
        for name, v in values.items():
            if not math.isfinite(v):
                raise ValueError(
                    f"score of layer {name!r} is not finite ({v}); refusing to save it"
                )
    index = {name: i for i, name in enumerate(values)}
    layers: list[dict[str, Any]] = []
    for name in ranked(scores):
        entry: dict[str, Any] = {"layer": name}
        if rank is not None:
            entry["rank"] = rank[name]
        entry.update(
            score=None if unscored else values[name],
            n_params=None if n_params is None else int(n_params[name]),
            index=index[name] if depth_known else None,
        )
        layers.append(entry)
    doc = {
        "format": MAC_FORMAT,
        "format_version": MAC_FORMAT_VERSION,
        "method": method,
        "parameters": dict(params),
        "model": {**dict(model_info), "n_layers": len(layers)},
        "checkpoint": {"path": checkpoint_path, "sha256": checkpoint_hash},
        "config": dict(config or {}),
        "ranked_by": "score" if rank is None else "rank",
        "layers": layers,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def staged_outputs(folder: str | Path, *names: str) -> Iterator[list[Path]]:
    """Write several output files all together or not at all.

    Yields a temporary path in ``folder`` for each file name (same suffix, so writers
    that go by it still work). When the block ends without an error, each replaces
    ``folder/NAME`` (``os.replace``, in the order given: put the file that marks a
    finished run, e.g. ``mac.json``, last); when it raises, the temporary files are
    removed and whatever ``folder`` held before is left untouched (a folder created
    here and left empty is removed).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"partial-{os.getpid()}"
    staged = [folder / f".{Path(n).stem}.{tag}{Path(n).suffix}" for n in names]
    try:
        yield staged
        for tmp, name in zip(staged, names, strict=True):
            os.replace(tmp, folder / name)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if nothing was written


def load_mac(path: str | Path) -> MacResult:
    """Read a ``mac.json`` written by :func:`save_mac` (any version of it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"layer analysis file not found: {path} (run `ramir analyze`)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != MAC_FORMAT:
        raise ValueError(f'{path}: not a ramir mac.json (missing "format": "{MAC_FORMAT}")')
    entries = doc.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'{path}: "layers" must be a non-empty list')
    ranked_by = doc.get("ranked_by", "score")
    if ranked_by not in ("score", "rank"):
        raise ValueError(f'{path}: "ranked_by" must be "score" or "rank", not {ranked_by!r}')
    try:
        by_depth = sorted(  # stable: entries without an index keep the file's order
            entries, key=lambda e: e["index"] if e.get("index") is not None else math.inf
        )
        names = [str(e["layer"]) for e in by_depth]
        with_rank = ["rank" in e for e in by_depth]
        if any(with_rank) and not all(with_rank):
            raise ValueError("some layers have a rank and others not")
        if ranked_by == "rank" and not all(with_rank):
            raise ValueError('"ranked_by": "rank" needs a rank in every layer entry')
        rank = {str(e["layer"]): int(e["rank"]) for e in by_depth} if all(with_rank) else None
        raw = [e["score"] for e in by_depth]
        if rank is not None and all(v is None for v in raw):
            values = [math.nan] * len(raw)  # an ordered list without scores
        else:
            values = [float(v) for v in raw]
        n_params = {
            str(e["layer"]): (None if e.get("n_params") is None else int(e["n_params"]))
            for e in by_depth
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed layer entry ({e})") from None
    if len(set(names)) != len(entries):
        raise ValueError(f"{path}: duplicate layer names")
    try:
        scores = LayerScores(zip(names, values, strict=True), rank=rank)
    except ValueError as e:
        raise ValueError(f"{path}: malformed layer entry ({e})") from None
    model = dict(doc.get("model", {}))
    model.pop("n_layers", None)
    return MacResult(
        method=str(doc.get("method", "")),
        scores=scores,
        n_params=n_params,
        parameters=dict(doc.get("parameters", {})),
        model=model,
        checkpoint=dict(doc.get("checkpoint", {})),
        config=dict(doc.get("config", {})),
    )
