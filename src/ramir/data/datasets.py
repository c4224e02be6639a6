"""Readers for the published layouts of the restoration benchmarks.

Each reader takes the dataset's root folder (plus a few keyword options) and returns a
:class:`Scan`: the ``(lq, gt)`` file pairs it found and the problems it met (a missing
folder, a degraded image without its clean image, ...). Readers never raise on a bad
layout, so ``ramir data check`` can list every problem at once; :meth:`Scan.require`
raises :class:`DatasetError` naming them.

Clean-only sources (LSDIR or any folder of photos, CBSD68 with ``generate: true``) give
pairs whose ``lq`` is ``None``; the degraded image is synthesised on the fly.

=================  ====================================================================
layout             folders under ``root``
=================  ====================================================================
``paired``         ``lq/`` + ``gt/``, matched by file stem (names configurable)
``reside_ots``     RESIDE OTS (train): hazy ``0001_0.8_0.2.jpg`` (any sub-folders) ->
                   clear ``0001.jpg|png``; hazy in ``haze/OTS``, ``hazy``, ``haze``,
                   ``synthetic`` or ``input``; clear in ``clear/clear_images``,
                   ``clear_images``, ``clear``, ``gt``, ``original`` or ``target``
``sots_outdoor``   SOTS-outdoor (test): same naming; ``hazy/`` + ``gt/`` (or ``clear/``)
``rain``           Rain13k train, Rain100L/H, Test100, Test1200, Test2800: ``input/`` +
                   ``target/`` (also ``rainy/`` + ``gt/`` with ``rain-N`` -> ``norain-N``)
``gopro``          GoPro: ``<sequence>/blur/`` + ``<sequence>/sharp/`` (``split``:
                   ``train``/``test`` selects ``root/train`` or ``root/test`` if present)
``lol_v1``         LOL-v1: ``our485/low|high`` (train), ``eval15/low|high`` (test), or
                   ``low/`` + ``high/`` directly under root
``lol_v2``         LOL-v2: ``Real_captured/{Train,Test}/{Low,Normal}`` (``low00001`` ->
                   ``normal00001``) and ``Synthetic/{Train,Test}/{Low,Normal}``
``cbsd68``         CBSD68: ``original_png/`` + ``noisy{sigma}/``, or ``generate: true``
                   for noise generated with a fixed seed
``clean_folder``   any folder of clean images (LSDIR, DIV2K, your photos), recursive
``skimage_photos`` the photos bundled with scikit-image (``split``: train/test/all)
``photo_corpus``   the fetched photo corpus (``view``: train/eval/eval_native; ``part``:
                   val/test/all for the eval views; ``ramir data corpus`` fetches it;
                   see :mod:`ramir.corpus`)
=================  ====================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramir.data.listing import list_images
from ramir.errors import RamirError
from ramir.registry import Registry

__all__ = [
    "DatasetError",
    "Pair",
    "Scan",
    "probe_image",
    "LAYOUTS",
    "DEFAULT_TASKS",
    "layouts",
    "layout_options",
    "scan",
    "scan_paired",
    "scan_reside",
    "scan_rain",
    "scan_gopro",
    "scan_lol_v1",
    "scan_lol_v2",
    "scan_cbsd68",
    "scan_clean_folder",
    "scan_skimage_photos",
]


class DatasetError(RamirError, ValueError):
    """A dataset folder is missing or malformed; the message names the folder or file."""


@dataclass(frozen=True)
class Pair:
    """One training/test example on disk.

    Attributes:
        gt: the clean image.
        lq: the degraded image, or ``None`` when it is synthesised from ``gt``.
        key: a stable name, unique within the dataset (e.g. ``"GOPR0384_11_00/000001"``).
    """

    gt: Path
    lq: Path | None
    key: str


@dataclass
class Scan:
    """What a reader found under ``root``."""

    layout: str
    root: Path
    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    degradation: tuple[str, dict[str, Any]] | None = None
    """A degradation the layout implies for ``lq = None`` pairs (CBSD68 ``generate``)."""

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.pairs)

    def require(self, name: str | None = None) -> Scan:
        """Return self, or raise :class:`DatasetError` listing the problems."""
        label = f"dataset {name!r} ({self.layout} at {self.root})" if name else str(self.root)
        problems = list(self.problems)
        if not self.pairs and not problems:
            problems.append(f"no images found under {self.root}")
        if problems:
            shown = "\n  - ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DatasetError(
                f"{label}: {len(problems)} problem(s):\n  - {shown}{more}\n"
                "Check the dataset root and its layout (ramir data check CONFIG lists all)."
            )
        return self


def probe_image(path: str | os.PathLike[str], *, decode: bool = True) -> tuple[int, int]:
    """``(height, width)`` of an image file, as training and evaluation will read it.

    ``decode=True`` decodes every pixel with :func:`ramir.data.read.read_array`, the data
    loaders' own reader (EXIF orientation applied), so a truncated or corrupt file fails
    here and not in the middle of a run; ``False`` reads the header only
    (:func:`ramir.data.read.image_size`: much faster, catches empty and non-image files
    and gives the declared size, but not damage further in the file).

    Raises:
        ImageReadError: the file is empty, not an image, over the loaders' pixel limit,
            or (``decode``) corrupt; without ``decode`` also a missing file.
        FileNotFoundError: (``decode``) the file does not exist.
    """
    from ramir.data.read import ImageReadError, image_size, read_array

    path = Path(path)
    if decode:  # the loaders' reader, with their pixel limit
        shape = read_array(path).pixels.shape
        return int(shape[0]), int(shape[1])
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty (0 bytes)")
    return image_size(path)


# ----------------------------------------------------------------------------- helpers


def _find_dir(root: Path, candidates: Sequence[str], what: str, problems: list[str]) -> Path | None:
    for c in candidates:
        p = root / c
        if p.is_dir():
            return p
    tried = ", ".join(f"{c}/" for c in candidates)
    problems.append(f"missing {what} folder under {root} (looked for {tried})")
    return None


def _images(folder: Path, problems: list[str], *, recursive: bool = False) -> list[Path]:
    try:
        return list_images(folder, recursive=recursive)
    except (FileNotFoundError, NotADirectoryError) as e:
        problems.append(str(e))
        return []


def _index_by_stem(
    files: list[Path], problems: list[str], folder: Path, *, relative: bool = False
) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = str(f.relative_to(folder).with_suffix("")) if relative else f.stem
        if key in out:
            problems.append(f"ambiguous: {out[key].name} and {f.name} in {f.parent} share a name")
            continue
        out[key] = f
    return out


def _match(
    lq_dir: Path,
    gt_dir: Path,
    problems: list[str],
    *,
    gt_key: Callable[[str], str | Sequence[str]] = lambda s: s,
    key_prefix: str = "",
    recursive_lq: bool = False,
    require_all_gt: bool = True,
) -> list[Pair]:
    """Pair every image in ``lq_dir`` with the image in ``gt_dir`` whose stem is ``gt_key(stem)``.

    ``gt_key`` may return several candidate stems (tried in order). Unmatched degraded
    images are problems; with ``require_all_gt`` so are clean images nobody refers to.
    """
    lq_files = _images(lq_dir, problems, recursive=recursive_lq)
    gt_index = _index_by_stem(_images(gt_dir, problems), problems, gt_dir)
    pairs: list[Pair] = []
    used: set[str] = set()
    for f in lq_files:
        wanted = gt_key(f.stem)
        cands = [wanted] if isinstance(wanted, str) else list(wanted)
        hit = next((c for c in cands if c in gt_index), None)
        if hit is None:
            problems.append(
                f"unmatched pair: {f} has no clean image named {cands[0]}.* in {gt_dir}"
            )
            continue
        used.add(hit)
        rel = f.relative_to(lq_dir).with_suffix("") if recursive_lq else Path(f.stem)
        pairs.append(Pair(gt=gt_index[hit], lq=f, key=f"{key_prefix}{rel.as_posix()}"))
    if require_all_gt:
        for stem, g in gt_index.items():
            if stem not in used:
                problems.append(f"unmatched pair: {g} has no degraded image in {lq_dir}")
    return pairs


# ----------------------------------------------------------------------------- readers


def scan_paired(
    root: Path, *, lq_dir: str = "lq", gt_dir: str = "gt", recursive: bool = False
) -> Scan:
    """Generic paired folder: ``root/<lq_dir>`` and ``root/<gt_dir>``, matched by file stem.

    With ``recursive``, sub-folders of ``lq_dir`` are searched and matched to clean images
    by stem alone (stems must be unique in ``gt_dir``).
    """
    s = Scan("paired", root)
    lq = _find_dir(root, [lq_dir], "degraded (lq)", s.problems)
    gt = _find_dir(root, [gt_dir], "clean (gt)", s.problems)
    if lq and gt:
        s.pairs = _match(lq, gt, s.problems, recursive_lq=recursive)
    return s


_HAZY_DIRS = ("hazy", "haze/OTS", "haze", "synthetic", "input", "outdoor/hazy")
_CLEAR_DIRS = (
    "gt",
    "clear/clear_images",
    "clear_images",
    "clear",
    "original",
    "target",
    "outdoor/gt",
)


def scan_reside(
    root: Path,
    *,
    hazy_dir: str | None = None,
    clear_dir: str | None = None,
    require_all_gt: bool = False,
    layout: str = "reside_ots",
) -> Scan:
    """RESIDE OTS / SOTS-outdoor: hazy ``<id>_<A>_<beta>.<ext>`` -> clear ``<id>.png|jpg``.

    Hazy images may sit in sub-folders (OTS ``part1``..``part4``). Several hazy images may
    share one clear image (OTS has 35 per scene), so unreferenced clear images are only a
    problem with ``require_all_gt`` (set for SOTS, which is one-to-one).
    """
    s = Scan(layout, root)
    hz = _find_dir(root, [hazy_dir] if hazy_dir else _HAZY_DIRS, "hazy", s.problems)
    cl = _find_dir(root, [clear_dir] if clear_dir else _CLEAR_DIRS, "clear", s.problems)
    if hz and cl:
        s.pairs = _match(
            hz,
            cl,
            s.problems,
            gt_key=lambda stem: stem.split("_")[0],
            recursive_lq=True,
            require_all_gt=require_all_gt,
        )
    return s


def _scan_sots(root: Path, *, hazy_dir: str | None = None, clear_dir: str | None = None) -> Scan:
    """SOTS-outdoor (test): ``hazy/0001_0.8_0.2.jpg`` -> ``gt/0001.png``, one-to-one."""
    return scan_reside(
        root, hazy_dir=hazy_dir, clear_dir=clear_dir, require_all_gt=True, layout="sots_outdoor"
    )


def _rain_gt_key(stem: str) -> list[str]:
    cands = [stem]
    for a, b in (("rain-", "norain-"), ("rain_", "norain_"), ("rain", "norain")):
        if stem.startswith(a):
            cands.append(b + stem[len(a) :])
            break
    return cands


def scan_rain(root: Path, *, lq_dir: str | None = None, gt_dir: str | None = None) -> Scan:
    """Rain13k / Rain100L / Rain100H / Test100 / Test1200 / Test2800: ``input/`` + ``target/``.

    Also accepts ``rainy/`` + ``gt/`` (PromptIR's Rain100L) where ``rain-12.png`` pairs
    with ``norain-12.png``.
    """
    s = Scan("rain", root)
    lq = _find_dir(root, [lq_dir] if lq_dir else ("input", "rainy", "rain"), "rainy", s.problems)
    gt = _find_dir(root, [gt_dir] if gt_dir else ("target", "gt", "norain"), "clean", s.problems)
    if lq and gt:
        s.pairs = _match(lq, gt, s.problems, gt_key=_rain_gt_key)
    return s


def scan_gopro(
    root: Path,
    *,
    split: str | None = None,
    blur_dir: str = "blur",
    sharp_dir: str = "sharp",
) -> Scan:
    """GoPro: ``<sequence>/blur/`` + ``<sequence>/sharp/`` under root (or ``root/<split>``).

    ``blur_gamma/`` folders are ignored. Every sub-folder of the root must be a sequence.
    """
    s = Scan("gopro", root)
    base = root
    if split is not None:
        if split not in ("train", "test"):
            s.problems.append(f"gopro: split must be 'train' or 'test', got {split!r}")
            return s
        if (root / split).is_dir():
            base = root / split
    if not base.is_dir():
        s.problems.append(f"missing folder: {base}")
        return s
    seqs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not seqs:
        s.problems.append(f"no sequence folders (<seq>/{blur_dir}, <seq>/{sharp_dir}) in {base}")
    for seq in seqs:
        lq = _find_dir(seq, [blur_dir], f"blurred ({seq.name})", s.problems)
        gt = _find_dir(seq, [sharp_dir], f"sharp ({seq.name})", s.problems)
        if lq and gt:
            s.pairs += _match(lq, gt, s.problems, key_prefix=f"{seq.name}/")
    return s


def scan_lol_v1(root: Path, *, split: str = "train") -> Scan:
    """LOL-v1: ``our485/low|high`` (train) or ``eval15/low|high`` (test).

    A root that directly holds ``low/`` and ``high/`` (or ``input/`` and ``target/``) is
    read as it is, whatever ``split``.
    """
    s = Scan("lol_v1", root)
    if split not in ("train", "test"):
        s.problems.append(f"lol_v1: split must be 'train' or 'test', got {split!r}")
        return s
    base = root
    if not any((root / d).is_dir() for d in ("low", "input", "Low")):
        subs = ("our485", "train", "Train") if split == "train" else ("eval15", "test", "Test")
        found = _find_dir(root, subs, f"LOL-v1 {split}", s.problems)
        if found is None:
            return s
        base = found
    lq = _find_dir(base, ("low", "input", "Low"), "low-light", s.problems)
    gt = _find_dir(base, ("high", "target", "Normal", "normal"), "normal-light", s.problems)
    if lq and gt:
        s.pairs = _match(lq, gt, s.problems)
    return s


def _lol_v2_gt_key(stem: str) -> list[str]:
    cands = [stem]
    if stem.startswith("low"):
        cands.insert(0, "normal" + stem[3:])
    return cands


def scan_lol_v2(root: Path, *, subset: str = "both", split: str = "train") -> Scan:
    """LOL-v2: ``Real_captured/<Split>/{Low,Normal}`` and ``Synthetic/<Split>/{Low,Normal}``.

    ``subset``: ``"real"``, ``"synthetic"`` or ``"both"`` (the reference trains on both);
    ``split``: ``"train"`` or ``"test"``. Real pairs are named ``low00001`` ->
    ``normal00001``; synthetic pairs share names.
    """
    s = Scan("lol_v2", root)
    if subset not in ("real", "synthetic", "both"):
        s.problems.append(f"lol_v2: subset must be 'real', 'synthetic' or 'both', got {subset!r}")
        return s
    if split not in ("train", "test"):
        s.problems.append(f"lol_v2: split must be 'train' or 'test', got {split!r}")
        return s
    parts = {"real": ["Real_captured"], "synthetic": ["Synthetic"]}.get(
        subset, ["Real_captured", "Synthetic"]
    )
    for part in parts:
        base = _find_dir(root, [part], f"LOL-v2 {part}", s.problems)
        if base is None:
            continue
        sp = _find_dir(base, [split.capitalize(), split], f"LOL-v2 {part} {split}", s.problems)
        if sp is None:
            continue
        lq = _find_dir(sp, ("Low", "low"), f"{part} low-light", s.problems)
        gt = _find_dir(sp, ("Normal", "normal", "high"), f"{part} normal-light", s.problems)
        if lq and gt:
            s.pairs += _match(lq, gt, s.problems, gt_key=_lol_v2_gt_key, key_prefix=f"{part}/")
    return s


def scan_cbsd68(
    root: Path,
    *,
    sigma: int = 25,
    generate: bool = False,
    clean_dir: str | None = None,
    noisy_dir: str | None = None,
) -> Scan:
    """CBSD68: clean ``original_png/`` with pre-generated ``noisy{sigma}/`` (matched by stem).

    With ``generate: true`` the noisy folder is not read: Gaussian noise of ``sigma`` is
    generated from a fixed seed (per image) and truncated to uint8, as PromptIR/AirNet do
    (``np.clip(x + n, 0, 255).astype(np.uint8)``).
    """
    s = Scan("cbsd68", root)
    clean_cands = [clean_dir] if clean_dir else ["original_png", "original", "clean", "gt"]
    if not any((root / c).is_dir() for c in clean_cands) and (root / "CBSD68").is_dir():
        root = root / "CBSD68"  # the published archive nests CBSD68/CBSD68/
    cl = _find_dir(root, clean_cands, "clean", s.problems)
    if generate:
        s.degradation = ("gaussian_noise", {"sigma": float(sigma), "quantize": "trunc"})
        if cl:
            s.pairs = [Pair(gt=p, lq=None, key=p.stem) for p in _images(cl, s.problems)]
        return s
    nz = _find_dir(root, [noisy_dir or f"noisy{sigma}"], f"noisy (sigma {sigma})", s.problems)
    if nz is None:
        s.problems[-1] += "; or set generate: true to synthesise the noise with a fixed seed"
    if cl and nz:
        s.pairs = _match(nz, cl, s.problems)
    return s


def scan_clean_folder(root: Path, *, recursive: bool = True) -> Scan:
    """Any folder of clean images (LSDIR, DIV2K, your photos); degraded on the fly."""
    s = Scan("clean_folder", root)
    files = _images(root, s.problems, recursive=recursive)
    s.pairs = [
        Pair(gt=p, lq=None, key=p.relative_to(root).with_suffix("").as_posix()) for p in files
    ]
    if not files and not s.problems:
        s.problems.append(f"no images ({', '.join(_exts())}) found in {root}")
    return s


def _exts() -> tuple[str, ...]:
    from ramir.data.listing import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def scan_skimage_photos(
    root: Path, *, split: str = "train", sources: list[str] | tuple[str, ...] = ("skimage",)
) -> Scan:
    """Real photos bundled with scikit-image (``root`` is ignored); see ``ramir.data.photos``.

    ``sources`` adds training photos shipped by other packages (``matplotlib``,
    ``sklearn``); the ``test`` split is always scikit-image's held-out three.
    """
    from ramir.data.photos import photo_dir, sample_photos

    s = Scan("skimage_photos", photo_dir())
    try:
        s.pairs = [Pair(gt=p, lq=None, key=p.stem) for p in sample_photos(split, sources)]
    except (ValueError, FileNotFoundError) as e:
        s.problems.append(str(e))
    return s


def scan_photo_corpus(
    root: Path, *, view: str = "train", part: str = "all", cache_dir: str | None = None
) -> Scan:
    """The photo corpus fetched by ``ramir data corpus`` (``root`` is ignored).

    ``view``: ``train`` (the training photos at several scales), ``eval`` (the
    evaluation photos, 384x384 views of whole scenes) or ``eval_native`` (their centre
    256x256 at full resolution); ``part`` (``eval`` and ``eval_native`` only): ``val``
    (the validation part, which chooses recipes and settings), ``test`` (the test part,
    only reported) or ``all`` (both; the default), by the fixed rule
    :func:`ramir.corpus.manifest.eval_part`; ``cache_dir``: where the corpus was fetched
    (default ``~/.cache/ramir/photos``, or ``$RAMIR_CACHE/photos``).
    """
    from ramir.corpus.manifest import CorpusError
    from ramir.corpus.views import view_dir, view_files

    s = Scan(
        "photo_corpus",
        view_dir(view, cache_dir) if view in ("train", "eval", "eval_native") else root,
    )
    try:
        if view == "train" and part not in (None, "all"):
            raise ValueError(
                f"part={part!r} applies to the eval and eval_native views only; the train "
                "view has no parts (remove the part option)"
            )
        files = view_files(view, cache_dir, part=None if view == "train" else part)
        s.pairs = [Pair(gt=p, lq=None, key=p.stem) for p in files]
    except (ValueError, CorpusError) as e:
        s.problems.append(str(e))
    return s


# ----------------------------------------------------------------------------- registry

# A reader's keyword-only parameters are its options; ``layout`` (set by the registering
# code, not by users) is hidden.
LAYOUTS: Registry[Callable[..., Scan]] = Registry(
    "dataset layout", word="option", keyword_only=True, hidden={"layout"}
)
LAYOUTS.add("paired", scan_paired)
LAYOUTS.add("reside_ots", scan_reside)
LAYOUTS.add("sots_outdoor", _scan_sots)
LAYOUTS.add("rain", scan_rain)
LAYOUTS.add("gopro", scan_gopro)
LAYOUTS.add("lol_v1", scan_lol_v1)
LAYOUTS.add("lol_v2", scan_lol_v2)
LAYOUTS.add("cbsd68", scan_cbsd68)
LAYOUTS.add("clean_folder", scan_clean_folder)
LAYOUTS.add("skimage_photos", scan_skimage_photos)
LAYOUTS.add("photo_corpus", scan_photo_corpus)

DEFAULT_TASKS: dict[str, str] = {
    "reside_ots": "haze",
    "sots_outdoor": "haze",
    "rain": "rain",
    "gopro": "motion_blur",
    "lol_v1": "low_light",
    "lol_v2": "low_light",
    "cbsd68": "noise",
}
"""The task a layout holds; clean-only layouts take theirs from the degradation."""


def layouts() -> list[str]:
    """Names of the dataset readers."""
    return LAYOUTS.names()


def layout_options(layout: str) -> dict[str, Any]:
    """The keyword options of reader ``layout`` and their defaults."""
    return LAYOUTS.kwargs_of(layout)


def scan(layout: str, root: str | os.PathLike[str], **options: Any) -> Scan:
    """Run reader ``layout`` on ``root`` with its keyword ``options``.

    Unknown layouts and options raise errors that list the valid ones; problems with the
    folders themselves are collected in the returned :class:`Scan`.
    """
    fn = LAYOUTS.get(layout)
    LAYOUTS.check_kwargs(layout, options)
    root = Path(root)
    if layout not in ("skimage_photos", "photo_corpus") and not root.is_dir():
        what = "not a folder" if root.exists() else "not found"
        return Scan(layout, root, problems=[f"dataset root folder {what}: {root}"])
    return fn(root, **options)
