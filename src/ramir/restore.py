"""Restore images with a trained model: whole-image or tiled inference.

>>> import ramir
>>> model = ramir.load_model("model.safetensors")          # doctest: +SKIP
>>> out = ramir.restore(model, "photo.jpg", tile=512)      # doctest: +SKIP
>>> ramir.data.write_image("restored.jpg", out.rgb, like=out)  # doctest: +SKIP

:func:`restore` normalises the input with ``model.normalization``, lets the model pad
to its ``input_multiple`` and crop back, maps the output back to [0, 1] and clamps it.
With ``tile=N`` the image is cut into overlapping ``N x N`` tiles laid out evenly over
the image; each tile's output is weighted by a separable raised-cosine ramp over the
overlap (weights of two neighbours sum to one there, and are 1 elsewhere and at the
image borders), so there are no seams and memory stays bounded by the tile size: only
one tile at a time is on the compute device, the full-size input and output stay where
the input is (the CPU for files).

Global context for tiles: networks with global average pooling (NAFNet's channel
attention, PromptIR's prompt weights) decide *what* to restore from statistics of the
whole input, so a tile alone can be misjudged (a tile of shadows looks like a low-light
image and gets brightened). With ``global_context=True`` (the default) a first pass over
the whole image, downscaled to at most :data:`CONTEXT_PIXELS`, records those pooled
statistics and every tile reuses them: tiled results then follow the whole-image ones.

``ensemble="flip"`` or ``"x8"`` is test-time self-ensembling: the model also restores
mirrored (and, for ``x8``, rotated) copies, each output is mapped back and the outputs are
averaged (2 or 8 passes; slower, usually a little better, see the README).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import math
import os
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import torch
from torch import nn

from ramir.options import ENSEMBLES

if TYPE_CHECKING:
    from ramir.data.io import LoadedImage

__all__ = [
    "restore",
    "restore_tensor",
    "restore_files",
    "RestoreReport",
    "RestoreJob",
    "collect_inputs",
    "plan_outputs",
    "check_writable",
    "tiled_apply",
    "tile_starts",
    "tile_ramp",
    "default_model_path",
    "DEFAULT_MODEL_FILE",
    "ENSEMBLES",
    "Ensemble",
    "ensemble_passes",
]

Ensemble = Literal["none", "flip", "x8"]
"""Test-time self-ensemble: one pass, + mirrored copy, or all 8 flips and rotations."""


CONTEXT_PIXELS = 512 * 512
"""Largest size (pixels) of the downscaled whole image whose pooled statistics the tiles
reuse (``global_context``); smaller images are used as they are. With the shipped model,
tiles of coffee upscaled 3x differ from the whole-image result by 0.00220 (mean abs.)
with a 512x512 context and by 0.00220 with a 1-megapixel one, whose pass needs about
four times the memory (+500 MB for a 2000x2000 photo)."""

DEFAULT_MODEL_FILE = "default_model.safetensors"
"""File name of the default model inside ``ramir/assets`` (shipped by a later release)."""


def default_model_path() -> Path:
    """Path of the model that ships with the package, used when no ``--model`` is given.

    Raises:
        FileNotFoundError: this installation ships no default model yet.
    """
    ref = resources.files("ramir") / "assets" / DEFAULT_MODEL_FILE
    path = Path(str(ref))
    if not path.is_file():
        raise FileNotFoundError(
            "no default model ships with this version of ramir; pass a checkpoint with "
            "--model PATH (a ramir .safetensors file or an official RAM .pth)"
        )
    return path


# ----------------------------------------------------------------------------- tiling


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` evenly.

    Uses the fewest tiles whose neighbours overlap by at least ``overlap`` pixels and
    spreads them evenly (first at 0, last at ``size - tile``). One tile if ``size <= tile``.
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile), got {overlap} for tile {tile}")
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    last = size - tile
    return [round(i * last / (n - 1)) for i in range(n)]


def tile_ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blending weights of one tile: ones, with raised-cosine ends of ``ramp`` pixels.

    ``w[i] = 0.5 - 0.5 cos(pi (i + 0.5) / ramp)`` for ``i < ramp`` when ``rise`` (a
    neighbour before), mirrored at the end when ``fall``; weights are strictly positive,
    and a falling and a rising ramp that overlap exactly sum to one.
    """
    w = torch.ones(length, dtype=torch.float32)
    ramp = min(ramp, length // 2) if (rise and fall) else min(ramp, length)
    if ramp <= 0:
        return w
    i = torch.arange(ramp, dtype=torch.float64)
    up = (0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / ramp)).float()
    if rise:
        w[:ramp] = up
    if fall:
        w[length - ramp :] = torch.minimum(w[length - ramp :], up.flip(0))
    return w


def _tiles(
    h: int, w: int, tile: int, overlap: int
) -> Iterator[tuple[int, int, int, int, torch.Tensor, torch.Tensor]]:
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, min(overlap, th - 1)), tile_starts(w, tw, min(overlap, tw - 1))
    for iy, y in enumerate(ys):
        wy = tile_ramp(th, overlap, rise=iy > 0, fall=iy < len(ys) - 1)
        for ix, x in enumerate(xs):
            wx = tile_ramp(tw, overlap, rise=ix > 0, fall=ix < len(xs) - 1)
            yield y, x, th, tw, wy, wx


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int = 32,
    *,
    device: torch.device | str | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> torch.Tensor:
    """Apply a size-preserving image function tile by tile with smooth blending.

    Args:
        fn: maps ``(B, C, h, w)`` on ``device`` to ``(B, C_out, h, w)``.
        x: ``(B, C, H, W)``; stays on its device, tiles are moved to ``device``.
        tile: tile side in pixels (clipped to the image size).
        overlap: minimum overlap between neighbouring tiles, also the ramp length.
        device: where ``fn`` runs (default: ``x``'s device).
        progress: ``True`` shows a tqdm bar over tiles; a callable is called as
            ``progress(done, total)`` after each tile (e.g. a web page's progress).

    Returns:
        ``(B, C_out, H, W)`` float32 on ``x``'s device.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    device = torch.device(device) if device is not None else x.device
    b, _, h, w = x.shape
    tiles = list(_tiles(h, w, tile, overlap))
    out: torch.Tensor | None = None
    # The tiles form a grid, so the total weight is separable: sum_y(wy) x sum_x(wx).
    wsum_y = torch.zeros(h, dtype=torch.float32, device=x.device)
    wsum_x = torch.zeros(w, dtype=torch.float32, device=x.device)
    seen_y: set[int] = set()
    seen_x: set[int] = set()
    bar = None
    callback = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(tiles), desc="tiles", unit="tile", leave=False)
    for done, (y, x0, th, tw, wy, wx) in enumerate(tiles, start=1):
        patch = x[..., y : y + th, x0 : x0 + tw].to(device)
        res = fn(patch).to(x.device, torch.float32)
        if out is None:
            out = torch.zeros(b, res.shape[1], h, w, dtype=torch.float32, device=x.device)
        wy_d, wx_d = wy.to(x.device), wx.to(x.device)
        out[..., y : y + th, x0 : x0 + tw] += res * (wy_d[:, None] * wx_d[None, :])
        if y not in seen_y:
            seen_y.add(y)
            wsum_y[y : y + th] += wy_d
        if x0 not in seen_x:
            seen_x.add(x0)
            wsum_x[x0 : x0 + tw] += wx_d
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(done, len(tiles))
    if bar is not None:
        bar.close()
    assert out is not None
    return out.div_(wsum_y[:, None] * wsum_x[None, :])


# ----------------------------------------------------------------------------- restoring


def global_pooling_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that average over the whole input (``AdaptiveAvgPool2d(1)``)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))
    ]


class _GlobalContext:
    """Records the outputs of global-pooling layers, then replays them.

    After ``start("record", key)`` the pooled outputs of the next forward pass are stored
    under ``key`` (one list per layer, in call order); after ``start("replay", key)``
    each layer returns its stored output instead of pooling its (tile's) input.
    ``close()`` removes the hooks.
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        self.store: dict[tuple[object, int], list[torch.Tensor]] = {}
        self.mode: Literal["record", "replay"] = "record"
        self.key: object = None
        self.calls: dict[int, int] = {}
        self.handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> object:
        slot = (self.key, id(module))
        if self.mode == "record":
            self.store.setdefault(slot, []).append(output.detach())
            return None
        n = self.calls.get(id(module), 0)
        self.calls[id(module)] = n + 1
        return self.store[slot][n].to(output.device, output.dtype)

    def start(self, mode: Literal["record", "replay"], key: object) -> None:
        self.mode, self.key, self.calls = mode, key, {}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _context_image(x: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """``x`` downscaled (area-averaged) to at most ``max_pixels``; ``x`` if small enough."""
    h, w = x.shape[-2:]
    if h * w <= max_pixels:
        return x
    scale = math.sqrt(max_pixels / (h * w))
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    return torch.nn.functional.interpolate(x.float(), size=size, mode="area")


# ITU-R BT.601 luma weights (as OpenCV's RGB-to-gray, which the gray releases' test
# scripts read their images with).
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _input_channels(model: nn.Module) -> int:
    """3 for RGB models, 1 for gray ones; a clear error for models that take something
    else than one image (Restormer's dual-pixel model takes two views, 6 channels)."""
    in_ch = int(getattr(model, "in_chans", 3))
    out_ch = int(getattr(model, "out_chans", in_ch))
    if in_ch not in (1, 3) or out_ch != in_ch:
        raise ValueError(
            f"this model takes {in_ch} input channels and returns {out_ch} (e.g. Restormer's "
            "dual-pixel defocus model, whose input is the two views of a dual-pixel "
            f"sensor); restoring photos needs an RGB or gray model: call the model "
            f"directly on a (B, {in_ch}, H, W) tensor in [0, 1]"
        )
    return in_ch


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for buf in model.buffers():
        return buf.device
    return torch.device("cpu")


def ensemble_passes(ensemble: str) -> tuple[tuple[int, bool], ...]:
    """The passes of self-ensemble ``ensemble`` (see :data:`ENSEMBLES`).

    Raises:
        ValueError: ``ensemble`` is not one of :data:`ENSEMBLES`.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    return ENSEMBLES[ensemble]


def restore_tensor(
    model: nn.Module,
    x: torch.Tensor,
    *,
    tile: int | None = None,
    tile_overlap: int = 32,
    device: torch.device | str | None = None,
    half: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    ensemble: Ensemble = "none",
    global_context: bool = True,
) -> torch.Tensor:
    """Restore ``(B, 3, H, W)`` float images in [0, 1]; see :func:`restore`.

    Returns ``(B, 3, H, W)`` float32 in [0, 1] on ``x``'s device.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (B, 3, H, W) tensor, got {shape}")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected float images in [0, 1], got {x.dtype}")
    if device is not None:
        device = torch.device(device)
        model.to(device)
    else:
        device = _model_device(model)
    if half and device.type != "cuda":
        raise ValueError(f"half precision needs a CUDA device; the model runs on {device}")
    passes = ensemble_passes(ensemble)
    if tile is not None:
        min_size = int(getattr(model, "min_size", 1))
        if tile < min_size:
            raise ValueError(f"tile {tile} is smaller than this model's minimum size {min_size}")
    norm = getattr(model, "normalization", None)
    gray = _input_channels(model) == 1

    def run(
        patch: torch.Tensor, context: Literal["record", "replay"] | None = None
    ) -> torch.Tensor:
        patch = patch.float()
        if gray:  # a gray model (SwinIR/Restormer gray releases): luma in, gray out
            patch = (patch * _LUMA.to(patch.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        inp = norm.normalize(patch) if norm is not None else patch
        ctx = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if half
            else contextlib.nullcontext()
        )
        out: torch.Tensor | None = None
        for k, (turns, mirror) in enumerate(passes):
            t = inp.flip(-1) if mirror else inp
            t = torch.rot90(t, turns, dims=(-2, -1)) if turns else t
            if context is not None:
                assert pooled is not None
                pooled.start(context, k)
            with ctx:
                o = model(t).float()
            o = torch.rot90(o, -turns, dims=(-2, -1)) if turns else o
            o = o.flip(-1) if mirror else o
            out = o if out is None else out + o  # out of place: o may alias the input
        assert out is not None
        if len(passes) > 1:
            out = out / len(passes)
        out = norm.denormalize(out) if norm is not None else out
        if gray:
            out = out.expand(-1, 3, -1, -1)
        return out.clamp(0.0, 1.0)  # not in place: out may be the caller's input

    was_training = model.training
    model.eval()
    h, w = x.shape[-2:]
    pooled: _GlobalContext | None = None
    if tile is not None and (h > tile or w > tile) and global_context:
        layers = global_pooling_layers(model)
        pooled = _GlobalContext(layers) if layers else None
    try:
        with torch.inference_mode():
            if tile is None:
                return run(x.to(device)).to(x.device)
            fn = run
            if pooled is not None:
                run(_context_image(x, CONTEXT_PIXELS).to(device), "record")
                fn = functools.partial(run, context="replay")
            return tiled_apply(fn, x, tile, tile_overlap, device=device, progress=progress)
    finally:
        if pooled is not None:
            pooled.close()
        model.train(was_training)


@overload
def restore(
    model: nn.Module | str | os.PathLike[str],
    image: torch.Tensor,
    *,
    tile: int | None = ...,
    tile_overlap: int = ...,
    device: torch.device | str | None = ...,
    half: bool = ...,
    progress: bool | Callable[[int, int], None] = ...,
    ensemble: Ensemble = ...,
    global_context: bool = ...,
) -> torch.Tensor: ...


@overload
def restore(
    model: nn.Module | str | os.PathLike[str],
    image: LoadedImage | str | os.PathLike[str],
    *,
    tile: int | None = ...,
    tile_overlap: int = ...,
    device: torch.device | str | None = ...,
    half: bool = ...,
    progress: bool | Callable[[int, int], None] = ...,
    ensemble: Ensemble = ...,
    global_context: bool = ...,
) -> LoadedImage: ...


def restore(
    model: nn.Module | str | os.PathLike[str],
    image: torch.Tensor | LoadedImage | str | os.PathLike[str],
    *,
    tile: int | None = None,
    tile_overlap: int = 32,
    device: torch.device | str | None = None,
    half: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    ensemble: Ensemble = "none",
    global_context: bool = True,
) -> torch.Tensor | LoadedImage:
    """Restore one image or a batch.

    Args:
        model: a ramir model (any ``nn.Module`` mapping ``(B, 3, H, W)`` to the same
            shape; if it has a ``normalization`` its input/output are normalised with
            it), or a checkpoint path loaded with :func:`ramir.checkpoint.load_model`.
            It is run in eval mode under ``torch.inference_mode``; its train/eval mode
            is restored afterwards.
        image: a ``(3, H, W)`` or ``(B, 3, H, W)`` float tensor in [0, 1]; a
            :class:`ramir.data.io.LoadedImage`; or an image file path (read with
            :func:`ramir.data.io.read_image`).
        tile: restore in overlapping ``tile x tile`` tiles (bounded memory); ``None``
            restores the whole image at once.
        tile_overlap: minimum overlap between tiles in pixels, blended smoothly.
        device: where the model runs; the model is moved there. Default: the device
            the model is already on.
        half: float16 autocast (CUDA only).
        progress: ``True`` shows a progress bar over tiles; a callable gets
            ``progress(done, total)`` after each tile.
        ensemble: test-time self-ensemble. ``"none"``: one pass; ``"flip"``: also the
            left-right mirrored image (2 passes); ``"x8"``: all 8 flips and quarter
            turns (8 passes; suits models trained with rotation augmentation). The
            outputs are mapped back and averaged before clamping.
        global_context: with ``tile``, give the model's global-pooling layers the
            statistics of the whole image (downscaled to at most
            :data:`CONTEXT_PIXELS`) instead of each tile's own; no effect on models
            without global pooling or without tiling.

    Returns:
        For a tensor: a float32 tensor of the same shape in [0, 1], on the input's
        device. For a LoadedImage or a path: a LoadedImage with the restored ``rgb`` and
        the input's ``alpha``, ``mode``, ``bit_depth`` and ``path``, ready for
        ``write_image(out_path, result.rgb, like=result)``.
    """
    if isinstance(model, (str, os.PathLike)):
        from ramir.checkpoint import load_model

        model = load_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a checkpoint path, got {type(model)}")
    kwargs = dict(
        tile=tile,
        tile_overlap=tile_overlap,
        device=device,
        half=half,
        progress=progress,
        ensemble=ensemble,
        global_context=global_context,
    )
    if isinstance(image, torch.Tensor):
        if image.dim() == 3:
            return restore_tensor(model, image[None], **kwargs)[0]
        return restore_tensor(model, image, **kwargs)

    from ramir.data.io import LoadedImage, read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if not isinstance(image, LoadedImage):
        raise TypeError(
            "image must be a (3, H, W)/(B, 3, H, W) tensor, a LoadedImage or a file path, "
            f"got {type(image).__name__}"
        )
    rgb = restore_tensor(model, image.rgb[None], **kwargs)[0]
    return dataclasses.replace(image, rgb=rgb)


# ----------------------------------------------------------------------------- files

AUTO_TILE = 512
"""Tile size used by :func:`restore_files` with ``tile="auto"`` for large images."""
AUTO_TILE_PIXELS = 1024 * 1024
"""Images with more pixels than this are tiled when ``tile="auto"``."""


@dataclasses.dataclass
class RestoreJob:
    """One input file and where its result goes."""

    src: Path
    dst: Path
    note: str = ""  # e.g. "written as PNG (.gif cannot be written)"


@dataclasses.dataclass
class RestoreReport:
    """What :func:`restore_files` did: files written and inputs that failed (with why)."""

    written: list[RestoreJob] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Expand files, folders and glob patterns into ``(file, relative output name)`` pairs.

    Folders contribute their images (see :func:`ramir.data.io.list_images`; with
    ``recursive`` their sub-folders too, keeping the relative layout); an existing file is
    taken as it is, whatever its suffix; anything else is read as a glob pattern
    (``**`` allowed). Files are de-duplicated.

    Returns:
        ``(found, problems)``: found files with the relative path their result gets, and
        ``(input, reason)`` for inputs that matched nothing.
    """
    from ramir.data.io import list_images

    found: list[tuple[Path, Path]] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = _resolved(path)
        if key not in seen:
            seen.add(key)
            found.append((path, rel))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = list_images(path, recursive=recursive)
            if not images:
                problems.append((str(item), "folder holds no images"))
            for f in images:
                add(f, f.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            # not only regular files: a broken or looping link is reported when read
            files = [m for m in matches if not m.is_dir()]
            if not files:
                problems.append((str(item), "pattern matches no files"))
            for f in files:
                add(f, Path(f.name))
        else:
            problems.append((str(item), "no such file or folder"))
    return found, problems


def _resolved(path: Path) -> Path:
    """``path`` made absolute with its links followed; a link loop (which ``resolve``
    refuses) stays as it is, so that reading it reports the problem for that file."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def plan_outputs(
    found: Sequence[tuple[Path, Path]], out_dir: str | os.PathLike[str], suffix: str = ""
) -> list[RestoreJob]:
    """Output paths ``out_dir / rel.parent / (stem + suffix + ext)`` for found inputs.

    An input whose format cannot be written (an animated GIF, say) gets a ``.png`` output
    and a note saying so.

    Raises:
        ValueError: an output would overwrite one of the inputs, or two inputs would
            write the same output file.
    """
    out_dir = Path(out_dir)
    inputs = {_resolved(src): src for src, _ in found}
    jobs: list[RestoreJob] = []
    by_dst: dict[Path, Path] = {}
    from ramir.data.io import IMAGE_EXTENSIONS

    for src, rel in found:
        ext, note = rel.suffix, ""
        if ext.lower() not in IMAGE_EXTENSIONS:
            ext, note = ".png", f"written as PNG ({rel.suffix or 'a file without suffix'} "
            note += "cannot be written)"
        dst = out_dir / rel.parent / f"{rel.stem}{suffix}{ext}"
        key = _resolved(dst)
        if key in inputs:
            raise ValueError(
                f"refusing to overwrite the input {inputs[key]}: choose another output folder "
                "with -o or add a --suffix"
            )
        if key in by_dst:
            raise ValueError(
                f"{by_dst[key]} and {src} would both be written to {dst}; "
                "restore them into separate folders"
            )
        by_dst[key] = src
        jobs.append(RestoreJob(src, dst, note))
    return jobs


def check_writable(out_dir: str | os.PathLike[str]) -> None:
    """Create ``out_dir`` and write a test file in it, so that a batch fails before any
    model runs when its results could not be saved.

    Raises:
        ValueError: the folder cannot be created or written.
    """
    import tempfile

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ValueError(
            f"cannot write to the output folder {out_dir} ({e.strerror or e}); "
            "choose another with -o"
        ) from None


def restore_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = "",
    recursive: bool = False,
    tile: int | Literal["auto"] | None = "auto",
    tile_overlap: int = 32,
    device: torch.device | str | None = None,
    half: bool = False,
    progress: bool = True,
    ensemble: Ensemble = "none",
    global_context: bool = True,
    max_pixels: int | None = None,
) -> RestoreReport:
    """Restore image files, folders and glob matches into ``out_dir``.

    Each result keeps its input's size, colour mode (gray stays gray), alpha channel,
    bit depth (16-bit stays 16-bit) and file format. Unreadable inputs are skipped and
    listed in the report; the others are still restored. Inputs are never overwritten.

    Args:
        model: the restoration model (see :func:`restore`).
        inputs: files, folders and glob patterns.
        out_dir: output folder (created).
        suffix: added to each output's stem (``photo.jpg`` -> ``photo_restored.jpg``).
        recursive: walk sub-folders of folder inputs (the layout is kept).
        tile: tile size; ``"auto"`` tiles with :data:`AUTO_TILE` images larger than
            :data:`AUTO_TILE_PIXELS`; ``None`` or 0 never tiles.
        tile_overlap, device, half, ensemble, global_context: see :func:`restore`.
        progress: tqdm bar over files (and over tiles for a single large image).
        max_pixels: images declaring more pixels are refused before decoding (``None``:
            :data:`ramir.data.io.DEFAULT_MAX_PIXELS`). An image that runs out of memory
            is reported like an unreadable one and the batch goes on.

    Raises:
        ValueError: an output path would overwrite an input, or two collide.
    """
    from ramir.data.io import DEFAULT_MAX_PIXELS, ImageReadError, read_image, write_image

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels

    ensemble_passes(ensemble)  # a bad name fails before any file is read
    found, problems = collect_inputs(inputs, recursive=recursive)
    jobs = plan_outputs(found, out_dir, suffix)
    if jobs:
        check_writable(out_dir)
    report = RestoreReport(failed=list(problems))
    bar = None
    if progress and len(jobs) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="restoring", unit="img")
    try:
        for job in jobs:
            try:
                image = read_image(job.src, max_pixels=limit)
            except (ImageReadError, OSError) as e:
                report.failed.append((str(job.src), str(e)))
            except MemoryError:
                report.failed.append((str(job.src), "out of memory while decoding it"))
            else:
                h, w = image.size
                this_tile = tile
                if tile == "auto":
                    this_tile = AUTO_TILE if h * w > AUTO_TILE_PIXELS else None
                try:
                    result = restore(
                        model,
                        image,
                        tile=this_tile or None,
                        tile_overlap=tile_overlap,
                        device=device,
                        half=half,
                        progress=progress and bar is None,
                        ensemble=ensemble,
                        global_context=global_context,
                    )
                except (ValueError, RuntimeError) as e:  # too small for the model, OOM...
                    report.failed.append((str(job.src), f"cannot restore: {e}"))
                except MemoryError:
                    report.failed.append(
                        (str(job.src), "cannot restore: out of memory (try --tile 512)")
                    )
                else:
                    try:
                        write_image(job.dst, result.rgb, like=result)
                    except (OSError, ValueError) as e:
                        report.failed.append((str(job.src), f"cannot write {job.dst}: {e}"))
                    else:
                        report.written.append(job)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return report
