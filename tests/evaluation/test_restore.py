"""ramir.restore: tensors, tiling, files of every mode, failures and overwrite protection."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import ramir
from ramir.cli import main
from ramir.data.read import LoadedImage, read_image
from ramir.data.write import write_image
from ramir.errors import UsageError
from ramir.inference.restore import default_model_path
from ramir.inference.tiling import (
    MAX_TILES,
    check_tile_count,
    check_tiling,
    count_tiles,
    tile_ramp,
    tile_starts,
)


def _smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    img = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear")
    return (img + 0.05 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def test_restore_tensor_keeps_shape_range_and_model_mode(tiny_swinir):
    x = _smooth_image(37, 45)
    tiny_swinir.train()
    out = ramir.restore(tiny_swinir, x[0])
    assert tiny_swinir.training  # the caller's mode is restored
    tiny_swinir.eval()
    assert out.shape == (3, 37, 45) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    batch = ramir.restore(tiny_swinir, torch.cat([x, x]))
    assert batch.shape == (2, 3, 37, 45)
    torch.testing.assert_close(batch[0], out, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="CUDA"):
        ramir.restore(tiny_swinir, x, half=True, device="cpu")


def test_tile_layout_and_weights():
    assert tile_starts(100, 128, 32) == [0]
    starts = tile_starts(300, 64, 16)
    assert starts[0] == 0 and starts[-1] == 300 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:], strict=False))
    up = tile_ramp(64, 16, rise=True, fall=False)
    down = tile_ramp(64, 16, rise=False, fall=True)
    # a falling ramp followed by a rising one overlapping by exactly 16 px sums to one
    torch.testing.assert_close(down[-16:] + up[:16], torch.ones(16))
    assert float(up.min()) > 0 and float(up[16:].min()) == 1.0


def test_tiles_not_larger_than_their_overlap_are_refused():
    with pytest.raises(UsageError, match="tile 16 must be larger than tile_overlap 32") as e:
        check_tiling(16, 32)
    assert "raise tile (512 is a good size) or lower tile_overlap (at most 12" in str(e.value)
    with pytest.raises(UsageError, match="tile 32 must be larger than tile_overlap 32"):
        check_tiling(32, 32)
    with pytest.raises(UsageError, match=r"more than 3/4 of tile 33: .* about 1089 times"):
        check_tiling(33, 32)  # used to be accepted: 1-pixel steps
    with pytest.raises(UsageError, match="tile_overlap must be >= 0"):
        check_tiling(64, -1)
    check_tiling(64, 48)  # exactly 3/4
    check_tiling(512, 32)


def test_a_plan_of_too_many_tiles_is_refused_before_the_model_runs():
    assert count_tiles(24, 24, 512, 32) == 1
    assert count_tiles(1000, 600, 512, 32) == 3 * 2
    assert check_tile_count(10_000, 10_000, 32, 0) == 313**2 <= MAX_TILES
    with pytest.raises(UsageError, match=r"20000x20000 image .* takes 1,562,500 tiles"):
        check_tile_count(20_000, 20_000, 16, 0)

    class Refuses(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the model ran")

    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, 6000, 6000)  # no memory behind it
    with pytest.raises(UsageError, match="more than the limit of 100,000"):
        ramir.restore(Refuses(), huge, tile=16, tile_overlap=0)
    with pytest.raises(UsageError, match="must be larger than"):  # silently clamped before
        ramir.restore(Refuses(), torch.zeros(1, 3, 300, 300), tile=16, tile_overlap=32)


def test_cli_refuses_bad_tiles_before_loading_a_model(tmp_path, capsys):
    write_image(tmp_path / "a.png", torch.rand(3, 24, 24))
    args = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    args += ["--model", str(tmp_path / "missing.safetensors")]  # never opened
    assert main([*args, "--tile", "16"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "ramir restore: error: --tile 16 must be larger than --tile-overlap 32 (neighbouring "
        "tiles overlap by --tile-overlap pixels); raise --tile (512 is a good size) or lower "
        "--tile-overlap (at most 12 for --tile 16)"
    )
    assert main([*args, "--tile-overlap", "600"]) == 1
    assert "--tile auto tiles large images with 512 pixels: --tile 512 must be larger" in (
        capsys.readouterr().err
    )
    assert main([*args, "--tile", "0", "--tile-overlap", "-1"]) == 1
    assert "--tile-overlap must be >= 0 pixels, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_tiled_agrees_with_whole_away_from_borders(tiny_swinir):
    x = _smooth_image(150, 170)
    whole = ramir.restore(tiny_swinir, x)
    tiled = ramir.restore(tiny_swinir, x, tile=96, tile_overlap=32)
    diff = (whole - tiled).abs()[..., 8:-8, 8:-8]
    assert float(diff.max()) < 5e-3, float(diff.max())
    assert float(diff.mean()) < 5e-4


def _write_inputs(folder):
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(1, 40, 48, generator=g).expand(3, -1, -1)
    write_image(folder / "gray.png", gray, mode="gray")
    rgba_alpha = torch.linspace(0, 1, 33 * 47).view(1, 33, 47)
    write_image(folder / "rgba.png", torch.rand(3, 33, 47, generator=g), alpha=rgba_alpha)
    write_image(folder / "deep.png", torch.rand(3, 32, 40, generator=g), bit_depth=16)
    write_image(folder / "odd.jpg", torch.rand(3, 37, 45, generator=g))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


def test_cli_restores_every_mode_and_reports_corrupt_files(tmp_path, tiny_swinir_ckpt, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _write_inputs(src)
    out = tmp_path / "out"
    code = main(["restore", str(src), "-o", str(out), "--model", str(tiny_swinir_ckpt), "-q"])
    assert code == 1  # one input failed
    err = capsys.readouterr().err
    assert "broken.png" in err and "gray.png" not in err
    for name in ["gray.png", "rgba.png", "deep.png", "odd.jpg"]:
        before, after = read_image(src / name), read_image(out / name)
        assert isinstance(after, LoadedImage)
        assert (after.mode, after.bit_depth, after.size) == (
            before.mode,
            before.bit_depth,
            before.size,
        ), name
        assert (after.alpha is None) == (before.alpha is None), name
        assert not torch.equal(after.rgb, before.rgb), name
    torch.testing.assert_close(
        read_image(out / "rgba.png").alpha, read_image(src / "rgba.png").alpha
    )
    assert not (out / "broken.png").exists()


def test_cli_never_overwrites_inputs(tmp_path, tiny_swinir_ckpt, capsys):
    write_image(tmp_path / "a.png", torch.rand(3, 24, 24))
    before = (tmp_path / "a.png").read_bytes()
    args = ["restore", str(tmp_path / "*.png"), "--model", str(tiny_swinir_ckpt), "-q"]
    assert main([*args, "-o", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before
    tiles = ["--tile", "16", "--tile-overlap", "4"]
    assert main([*args, "-o", str(tmp_path), "--suffix", "_restored", *tiles]) == 0
    assert read_image(tmp_path / "a_restored.png").size == (24, 24)
    assert (tmp_path / "a.png").read_bytes() == before


def test_cli_writes_one_image_to_the_file_o_names(tmp_path, tiny_swinir_ckpt, capsys):
    """``-o NAME.png`` with one input image writes that file (the suffix sets the format);
    several inputs, --suffix, or the input's own name are refused with nothing written;
    an existing folder named like a file stays a folder."""
    write_image(tmp_path / "a.jpg", torch.rand(3, 24, 28))
    write_image(tmp_path / "b.jpg", torch.rand(3, 24, 28))
    before = (tmp_path / "a.jpg").read_bytes()
    model = ["--model", str(tiny_swinir_ckpt), "-q"]
    out = tmp_path / "sub" / "a_fixed.png"
    assert main(["restore", str(tmp_path / "a.jpg"), "-o", str(out), *model]) == 0
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    assert read_image(out).size == (24, 28)
    assert "into" in capsys.readouterr().out
    for extra in (["--suffix", "_r"], []):
        inputs = [str(tmp_path / "a.jpg")] + ([] if extra else [str(tmp_path / "b.jpg")])
        bad = tmp_path / "c.png"
        assert main(["restore", *inputs, "-o", str(bad), *extra, *model]) == 1
        assert not bad.exists()
        assert ("--suffix" if extra else "exactly one input image") in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "a.jpg"), *model]) == 1
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert (tmp_path / "a.jpg").read_bytes() == before
    (tmp_path / "dir.png").mkdir()
    assert main(["restore", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "dir.png"), *model]) == 0
    assert (tmp_path / "dir.png" / "a.jpg").is_file()


def test_restore_path_and_missing_inputs(tmp_path, tiny_swinir, tiny_swinir_ckpt, capsys):
    write_image(tmp_path / "x.png", torch.rand(3, 20, 28))
    res = ramir.restore(tiny_swinir_ckpt, tmp_path / "x.png")
    assert isinstance(res, LoadedImage) and res.size == (20, 28) and res.path is not None
    code = main(
        ["restore", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), "--model",
         str(tiny_swinir_ckpt)]
    )  # fmt: skip
    assert code == 1 and "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("as_glob", [False, True])
def test_link_loops_are_reported_and_skipped(tmp_path, tiny_swinir_ckpt, capsys, as_glob):
    """`ln -s l2.png d/l1.png; ln -s l1.png d/l2.png`: the other images are restored, the
    loop is reported per file and the exit code says that something failed."""
    d = tmp_path / "d"
    d.mkdir()
    write_image(d / "ok.png", torch.rand(3, 20, 28))
    (d / "l1.png").symlink_to("l2.png")
    (d / "l2.png").symlink_to("l1.png")
    target = str(d / "*.png") if as_glob else str(d)
    out = tmp_path / "o"
    assert main(["restore", target, "-o", str(out), "--model", str(tiny_swinir_ckpt), "-q"]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["ok.png"]
    assert captured.err.count("symbolic link that leads to no file (broken, or a link loop)") == 2
    assert "restored 1 of 3 image(s)" in captured.out


def test_oversized_images_are_refused_before_decoding_and_the_batch_goes_on(
    tmp_path, tiny_swinir_ckpt, capsys
):
    from PIL import Image

    d = tmp_path / "d"
    d.mkdir()
    write_image(d / "a_ok.png", torch.rand(3, 20, 28))
    Image.new("1", (4000, 3000)).save(d / "b_big.png")
    out = tmp_path / "o"
    args = ["restore", str(d), "-o", str(out), "--model", str(tiny_swinir_ckpt), "-q"]
    assert main([*args, "--max-pixels", "1000000"]) == 1
    err = capsys.readouterr().err
    assert "b_big.png declares 4000x3000 pixels (12.0 megapixels), over the limit of 1.0" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_ok.png"]


def test_gif_inputs_are_written_as_png_and_said_so(tmp_path, tiny_swinir_ckpt, capsys):
    from PIL import Image

    frames = [Image.fromarray((np.random.default_rng(i).random((24, 28, 3)) * 255).astype(
        np.uint8)).convert("P") for i in range(2)]  # fmt: skip
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "o"
    args = ["restore", str(tmp_path / "anim.gif"), "-o", str(out), "--model"]
    assert main([*args, str(tiny_swinir_ckpt), "-q"]) == 0
    assert [p.name for p in out.iterdir()] == ["anim.png"]
    assert "anim.gif: written as PNG (.gif cannot be written)" in capsys.readouterr().err


def test_an_unwritable_output_folder_fails_before_the_model_runs(
    tmp_path, tiny_swinir_ckpt, monkeypatch
):
    from ramir.inference.batch import restore_files

    write_image(tmp_path / "x.png", torch.rand(3, 20, 28))
    (tmp_path / "file").write_text("not a folder")
    calls = []
    batch = sys.modules["ramir.inference.batch"]
    for name in ("restore", "restore_tensor"):
        monkeypatch.setattr(batch, name, lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="cannot write to the output folder .*choose another"):
        restore_files(ramir.load_model(tiny_swinir_ckpt), [tmp_path / "x.png"],
                        tmp_path / "file" / "out", progress=False)  # fmt: skip
    assert calls == []


def test_default_model_hook_has_a_clear_error():
    try:
        path = default_model_path()
    except FileNotFoundError as e:
        assert "--model" in str(e)
    else:  # a default model ships (issue 7)
        assert path.is_file() and np.isfinite(path.stat().st_size)


class _ColumnBias(torch.nn.Module):
    """Adds a left-to-right ramp: an output that depends on orientation, like a real model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-0.1, 0.1, x.shape[-1], device=x.device)
        return x + ramp


def test_self_ensemble_maps_each_pass_back_and_averages():
    x = _smooth_image(24, 40) * 0.5 + 0.25  # no clamping for these outputs
    model = _ColumnBias()
    one = ramir.restore(model, x)
    torch.testing.assert_close(one, x + torch.linspace(-0.1, 0.1, 40))
    # the mirrored pass sees the ramp reversed; mapped back and averaged, the ramps cancel
    torch.testing.assert_close(ramir.restore(model, x, ensemble="flip"), x)
    # x8: the four turns of a non-square image give ramps along both axes, which also cancel
    x8 = ramir.restore(model, x, ensemble="x8")
    assert x8.shape == x.shape
    torch.testing.assert_close(x8, x)
    # a model that returns its input: the passes must not write into the caller's tensor
    before = x.clone()
    torch.testing.assert_close(ramir.restore(torch.nn.Identity(), x, ensemble="x8"), before)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="ensemble must be one of none, flip, x8, got 'x4'"):
        ramir.restore(model, x, ensemble="x4")


def test_self_ensemble_of_an_equivariant_model_changes_nothing(tiny_swinir):
    """A model that commutes with flips gives the same result with or without ensembling,
    also when tiled; the tiny SwinIR does not, and the ensemble differs but stays close."""
    x = _smooth_image(48, 56)
    pointwise = torch.nn.Conv2d(3, 3, 1)
    torch.nn.init.eye_(pointwise.weight[:, :, 0, 0])
    with torch.no_grad():
        pointwise.weight.mul_(0.9)
        pointwise.bias.fill_(0.05)
    base = ramir.restore(pointwise, x)
    for mode in ("flip", "x8"):
        torch.testing.assert_close(ramir.restore(pointwise, x, ensemble=mode), base)
        tiled = ramir.restore(pointwise, x, ensemble=mode, tile=32, tile_overlap=8)
        torch.testing.assert_close(tiled, base)
    plain = ramir.restore(tiny_swinir, x)
    flip = ramir.restore(tiny_swinir, x, ensemble="flip")
    mirrored = ramir.restore(tiny_swinir, x.flip(-1)).flip(-1)
    torch.testing.assert_close(flip, ((plain + mirrored) / 2).clamp(0, 1), atol=1e-5, rtol=0)
    assert float((flip - plain).abs().max()) > 1e-4


def test_cli_ensemble_option(tmp_path, tiny_swinir_ckpt, capsys):
    write_image(tmp_path / "a.png", _smooth_image(32, 40)[0])
    for mode in ("none", "flip"):
        out = tmp_path / mode
        args = ["restore", str(tmp_path / "a.png"), "--model", str(tiny_swinir_ckpt)]
        assert main([*args, "-o", str(out), "--ensemble", mode, "-q"]) == 0
    a = read_image(tmp_path / "none" / "a.png").rgb
    b = read_image(tmp_path / "flip" / "a.png").rgb
    assert a.shape == b.shape == (3, 32, 40)
    assert float((a - b).abs().max()) > 0  # the mirrored pass changed the result
    with pytest.raises(SystemExit):
        main(["restore", str(tmp_path / "a.png"), "--ensemble", "x3"])
    assert "invalid choice" in capsys.readouterr().err


class _GlobalShift(torch.nn.Module):
    """Pointwise except for one global statistic: ``x - mean(x) + 0.5`` per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.pool(x) + 0.5


def test_tiles_use_the_whole_image_statistics_of_global_pooling():
    model = _GlobalShift()
    x = _smooth_image(70, 90)
    x[..., :35, :45] *= 0.3  # a dark quarter: its tiles' own means differ from the image's
    whole = ramir.restore(model, x)
    tiled = ramir.restore(model, x, tile=32, tile_overlap=8)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    naive = ramir.restore(model, x, tile=32, tile_overlap=8, global_context=False)
    assert float((naive - whole).abs().mean()) > 0.02
    # each ensemble pass gets its own context; the hooks are gone afterwards
    flip = ramir.restore(model, x, tile=32, tile_overlap=8, ensemble="x8")
    torch.testing.assert_close(flip, whole, atol=1e-5, rtol=0)
    assert not model.pool._forward_hooks


def test_large_images_take_their_context_from_a_downscaled_copy(monkeypatch):
    from ramir.inference import context

    model = _GlobalShift()
    x = _smooth_image(64, 96)
    x[..., :32, :] *= 0.4
    whole = ramir.restore(model, x)
    monkeypatch.setattr(context, "CONTEXT_PIXELS", 32 * 48)  # a 2x area-downscale: same means
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(tuple(inp[0].shape[-2:])))
    tiled = ramir.restore(model, x, tile=40, tile_overlap=8)
    assert seen[0] == (32, 48)  # the context pass, then the tiles
    assert all(s == (40, 40) for s in seen[1:])
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_global_context_brings_tiles_of_the_shipped_model_close_to_the_whole_image():
    """The shipped NAFNet judges a photo by its global statistics: on its own, a tile of
    the dark part of coffee looks like a low-light image and is brightened."""
    from skimage import data as skdata

    model = ramir.load_model(default_model_path())
    img = torch.from_numpy(skdata.coffee()[::2, ::2].astype(np.float32) / 255)
    x = img.permute(2, 0, 1)[None].contiguous()  # 200 x 300
    whole = ramir.restore(model, x)
    with_context = ramir.restore(model, x, tile=64, tile_overlap=16)
    naive = ramir.restore(model, x, tile=64, tile_overlap=16, global_context=False)
    err, err_naive = (float((t - whole).abs().mean()) for t in (with_context, naive))
    assert err < 0.01 and err < err_naive / 3, (err, err_naive)


def test_models_without_global_pooling_tile_as_before(tiny_swinir):
    x = _smooth_image(40, 52)
    a = ramir.restore(tiny_swinir, x, tile=32, tile_overlap=8)
    b = ramir.restore(tiny_swinir, x, tile=32, tile_overlap=8, global_context=False)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_cli_no_global_context_option(tmp_path, tiny_swinir_ckpt):
    src = tmp_path / "in.png"
    write_image(src, _smooth_image(40, 40)[0])
    out = tmp_path / "out"
    args = ["restore", str(src), "-o", str(out), "--model", str(tiny_swinir_ckpt)]
    args += ["--tile", "32", "--tile-overlap", "8"]
    assert main([*args, "--no-global-context", "-q"]) == 0
    assert read_image(out / "in.png").rgb.shape == (3, 40, 40)
