"""The corpus manifest: which photos, from which packages, in which split and part.

The manifest (``ramir/assets/photo_corpus.json``) lists, for every photo, the package and
version it ships in, its path inside the package, its licence, its size and the SHA-256
of its bytes; for every package, the download address and the archive's SHA-256.

Two splits, disjoint by source package (and so by SHA-256; :meth:`Manifest.validate`
checks both):

* ``train``: the training corpus of the default model;
* ``eval``: the photos it is judged on, never trained on.

The evaluation photos are split once more, by a fixed rule on the photo id alone
(:func:`eval_part`: the SHA-256 of a fixed salt and the id), into two parts:

* ``val`` (validation): the photos that choose recipes, checkpoints, task weights and
  the settings of the classical baselines;
* ``test``: the photos that are only reported (the README, ``ramir info``, a model's
  metadata), never used to choose anything.

The rule depends on nothing but the id, so a photo keeps its part forever, and photos
added to the manifest later do not move the others (a test pins the assignment).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramir.errors import RamirError

__all__ = [
    "CorpusError",
    "PackageSource",
    "Photo",
    "Manifest",
    "SPLITS",
    "PARTS",
    "EVAL_PART_SALT",
    "MANIFEST_PATH",
    "eval_part",
    "check_part",
    "load_manifest",
]

SPLITS = ("train", "eval")
PARTS = ("val", "test")
"""The two parts of the evaluation split (:func:`eval_part`)."""
EVAL_PART_SALT = "ramir-eval-part-v1"
"""The salt of :func:`eval_part`. Changing it re-deals every photo: never change it."""

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "assets" / "photo_corpus.json"


class CorpusError(RamirError, RuntimeError):
    """A package cannot be fetched, fails its checksum, or the corpus is not prepared."""


def eval_part(photo_id: str) -> Literal["val", "test"]:
    """The part of the evaluation split that photo ``photo_id`` belongs to, forever.

    ``val`` (validation: chooses recipes, checkpoints and settings) or ``test`` (only
    reported). The rule: the first 8 bytes of SHA-256(``EVAL_PART_SALT + ":" + id``),
    read as a big-endian integer, below 2**63 give ``val``, else ``test`` (about half
    and half). It reads nothing but the id, so it never changes when photos are added.
    """
    digest = hashlib.sha256(f"{EVAL_PART_SALT}:{photo_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") < 1 << 63 else "test"


def check_part(part: str | None) -> str | None:
    """Validate a part name (``val``, ``test``; ``None`` or ``all``: both -> ``None``)."""
    if part is None or part == "all":
        return None
    if part not in PARTS:
        raise ValueError(f"part must be one of val, test or all, got {part!r}")
    return part


@dataclass(frozen=True)
class PackageSource:
    """A package (archive) that photos ship in.

    Attributes:
        name: package name; registry: ``debian`` or ``pypi``; version: its exact version.
        url: the archive's download address (a registry's pool or files host).
        sha256 / size: of the archive.
        license: the licence of its photos (as the package states it).
    """

    name: str
    registry: str
    version: str
    url: str
    sha256: str
    size: int
    license: str


@dataclass(frozen=True)
class Photo:
    """One photo of the corpus.

    Attributes:
        id: a unique short name (the prepared files' stem).
        split: ``train`` or ``eval``.
        package: the :class:`PackageSource` name; member: its path inside the archive
            (``a/b.rcc::img/c.jpg`` for a file inside a Qt resource file).
        sha256 / size: of the photo's bytes; width / height: its pixels.
        license: its licence; subject: what it shows.
    """

    id: str
    split: str
    package: str
    member: str
    sha256: str
    size: int
    width: int
    height: int
    license: str
    subject: str = ""


@dataclass
class Manifest:
    packages: dict[str, PackageSource]
    photos: list[Photo]
    notes: dict[str, Any] = field(default_factory=dict)

    def split(self, split: str, part: str | None = None) -> list[Photo]:
        """The photos of ``split`` (``train`` or ``eval``), in manifest order.

        ``part`` (``val``, ``test``; ``None`` or ``all``: both) keeps only the evaluation
        photos of that part (:func:`eval_part`); it applies to the ``eval`` split only.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        part = check_part(part)
        if part is not None and split != "eval":
            raise ValueError(f"part={part!r} applies to the eval split only, not {split!r}")
        return [
            p for p in self.photos if p.split == split and (part is None or eval_part(p.id) == part)
        ]

    def parts(self) -> dict[str, list[Photo]]:
        """``{"val": [...], "test": [...]}``: the evaluation photos of each part."""
        return {part: self.split("eval", part) for part in PARTS}

    def validate(self) -> None:
        """Check ids, splits, package references and the two splits' disjointness."""
        ids = [p.id for p in self.photos]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise CorpusError(f"photo corpus manifest: duplicate ids {', '.join(dup)}")
        for p in self.photos:
            if p.split not in SPLITS:
                raise CorpusError(f"photo {p.id}: split must be one of {SPLITS}, got {p.split!r}")
            if p.package not in self.packages:
                raise CorpusError(f"photo {p.id}: unknown package {p.package!r}")
        by_split = {s: {p.package for p in self.split(s)} for s in SPLITS}
        shared = by_split["train"] & by_split["eval"]
        if shared:
            raise CorpusError(
                f"photo corpus manifest: packages {', '.join(sorted(shared))} give photos to "
                "both the training and the evaluation split"
            )
        hashes = {s: {p.sha256 for p in self.split(s)} for s in SPLITS}
        if hashes["train"] & hashes["eval"]:
            raise CorpusError("photo corpus manifest: a photo is in both splits (same SHA-256)")


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Read (and validate) the corpus manifest (default: the one shipped with ramir)."""
    raw = json.loads(Path(path or MANIFEST_PATH).read_text(encoding="utf-8"))
    packages = {name: PackageSource(name=name, **p) for name, p in raw["packages"].items()}
    photos = [Photo(**p) for p in raw["photos"]]
    m = Manifest(packages, photos, raw.get("notes", {}))
    m.validate()
    return m
