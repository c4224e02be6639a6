"""Image I/O: round-trips for gray, RGBA, 16-bit; EXIF orientation; corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps

from ramir.data.listing import list_images
from ramir.data.pixels import to_float01
from ramir.data.read import ImageReadError, read_array, read_image
from ramir.data.write import write_image


def _rand_u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _rand_u16(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_rgb8_lossless_round_trip(tmp_path, suffix):
    a = _rand_u8((17, 23, 3))
    p = tmp_path / f"x{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(p, a, photometric="rgb")
    elif suffix == ".webp":
        Image.fromarray(a).save(p, lossless=True)
    else:
        Image.fromarray(a).save(p)
    img = read_image(p)
    assert img.rgb.shape == (3, 17, 23) and img.rgb.dtype == torch.float32
    assert img.mode == "rgb" and img.bit_depth == 8 and img.alpha is None and img.path == p
    assert torch.equal(img.rgb, torch.from_numpy(a.transpose(2, 0, 1)).float() / 255)
    out = write_image(tmp_path / f"y{suffix}", img.rgb, like=img)
    assert np.array_equal(read_array(out).pixels, a)


def test_jpeg_reads_and_writes(tmp_path):
    a = np.full((16, 16, 3), 128, np.uint8)
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    img = read_image(tmp_path / "x.jpg")
    assert img.mode == "rgb" and img.bit_depth == 8
    assert abs(float(img.rgb.mean()) - 128 / 255) < 2 / 255
    write_image(tmp_path / "y.jpeg", img.rgb, like=img)
    assert abs(float(read_image(tmp_path / "y.jpeg").rgb.mean()) - 128 / 255) < 2 / 255


def test_gray_is_expanded_and_written_back_as_gray(tmp_path):
    g = _rand_u8((20, 30))
    Image.fromarray(g).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.mode == "gray" and img.rgb.shape == (3, 20, 30)
    assert torch.equal(img.rgb[0], img.rgb[1]) and torch.equal(img.rgb[1], img.rgb[2])
    out = write_image(tmp_path / "g2.png", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), g)


def test_gray_written_as_channel_mean(tmp_path):
    rgb = torch.zeros(3, 4, 4)
    rgb[0] = 0.3
    rgb[1] = 0.6
    rgb[2] = 0.9
    out = write_image(tmp_path / "m.png", rgb, mode="gray")
    with Image.open(out) as im:
        assert np.all(np.asarray(im) == round(0.6 * 255))


def test_rgba_alpha_is_split_and_kept(tmp_path):
    a = _rand_u8((12, 14, 4), seed=1)
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.alpha is not None and img.alpha.shape == (1, 12, 14)
    assert img.rgb.shape == (3, 12, 14)
    assert torch.equal(img.alpha[0], torch.from_numpy(a[:, :, 3]).float() / 255)
    out = write_image(tmp_path / "b.png", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im), a)
    # dropping alpha on request (JPEG cannot store it)
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "c.jpg", img.rgb, like=img)
    write_image(tmp_path / "c.jpg", img.rgb, like=img, keep_alpha=False)


def test_gray_alpha(tmp_path):
    a = _rand_u8((9, 11, 2), seed=2)
    Image.fromarray(a, mode="LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.mode == "gray" and img.alpha is not None
    out = write_image(tmp_path / "la2.png", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.mode == "LA" and np.array_equal(np.asarray(im), a)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (8, 8))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.putpixel((1, 1), 1)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    img = read_image(tmp_path / "p.png")
    assert (
        img.alpha is not None
        and float(img.alpha[0, 1, 1]) == 1.0
        and float(img.alpha[0, 0, 0]) == 0
    )
    assert float(img.rgb[0, 1, 1]) == 1.0


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_keeps_precision(tmp_path, suffix, channels):
    a = _rand_u16((10, 13, channels), seed=channels)
    p = tmp_path / f"in{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(
            p,
            a[:, :, 0] if channels == 1 else a,
            photometric="minisblack" if channels == 1 else "rgb",
            extrasamples=["unassalpha"] if channels == 4 else None,
        )
    elif channels == 1:
        Image.fromarray(a[:, :, 0]).save(p)  # Pillow writes 16-bit gray PNG ("I;16")
    else:
        import png

        png.Writer(13, 10, greyscale=False, alpha=channels == 4, bitdepth=16).write(
            open(p, "wb"), a.reshape(10, -1)
        )
    img = read_image(p)
    assert img.bit_depth == 16
    assert img.mode == ("gray" if channels == 1 else "rgb")
    expect = torch.from_numpy(a[:, :, : min(channels, 3)].astype(np.float32) / 65535)
    assert torch.equal(img.rgb[: min(channels, 3)], expect.permute(2, 0, 1))
    # 16-bit values fall between the 1/255 steps of 8-bit images
    assert float((img.rgb * 255 - (img.rgb * 255).round()).abs().max()) > 0.1
    out = write_image(tmp_path / f"out{suffix}", img.rgb, like=img)
    raw = read_array(out)
    assert raw.bit_depth == 16 and raw.pixels.dtype == np.uint16
    assert np.array_equal(raw.pixels[:, :, : min(channels, 3)], a[:, :, : min(channels, 3)])
    if channels == 4:
        assert np.array_equal(raw.alpha, a[:, :, 3])


def test_16bit_to_jpeg_fails_loudly(tmp_path):
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), bit_depth=16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    a = _rand_u8((6, 10, 3), seed=orientation)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.png"
    im.save(p, exif=exif.tobytes())
    with Image.open(p) as ref:
        expected = np.asarray(ImageOps.exif_transpose(ref).convert("RGB"))
    raw = read_array(p)
    assert np.array_equal(raw.pixels, expected)
    if orientation >= 5:
        assert raw.pixels.shape[:2] == (10, 6)


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    a = _rand_u8((64, 64, 3))
    Image.fromarray(a).save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    Image.fromarray(a).save(tmp_path / "ok.png")
    pdata = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(pdata[: len(pdata) // 2])
    for name in ("trunc.jpg", "junk.png", "trunc.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_write_is_atomic_and_validates(tmp_path):
    out = write_image(tmp_path / "sub" / "x.png", torch.rand(3, 5, 5))
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "x.gifx", torch.rand(3, 5, 5))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "n.png", torch.full((3, 2, 2), float("nan")))
    # values outside [0, 1] are clipped
    write_image(tmp_path / "c.png", torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1))
    assert read_array(tmp_path / "c.png").pixels.ravel().tolist() == [0, 128, 255]


def test_list_images_sorted_and_filtered(tmp_path):
    for n in ["10.png", "2.PNG", "1.jpg", "a.txt", ".hidden.png", "b.webp"]:
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.bmp").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["1.jpg", "2.PNG", "10.png", "b.webp"]
    assert "c.bmp" in [p.name for p in list_images(tmp_path, recursive=True)]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")


def test_declared_size_is_checked_before_decoding(tmp_path):
    """A small file that declares a huge image is refused from its header (PNG via
    Pillow, TIFF via tifffile), before the pixels are decoded."""
    import resource

    import tifffile

    from ramir.data.read import ImageTooLargeError

    bomb = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000)).save(bomb)  # 169 megapixels in a few KB
    assert bomb.stat().st_size < 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError, match=r"declares 13000x13000 pixels \(169.0 megap"):
        read_image(bomb)  # default limit: 100 megapixels
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100  # MB
    tif = tmp_path / "big.tif"
    tifffile.imwrite(tif, np.zeros((1200, 1000), np.uint8), tile=(256, 256), compression="zlib")
    with pytest.raises(ImageTooLargeError, match="1000x1200 pixels"):
        read_image(tif, max_pixels=1_000_000)
    assert read_image(tif, max_pixels=None).size == (1200, 1000)


def test_empty_and_oversized_files_get_their_own_messages(tmp_path):
    from ramir.data.read import ImageReadError

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"the file is empty \(0 bytes\)"):
        read_image(empty)
    big = tmp_path / "big.png"
    Image.new("1", (3000, 3000)).save(big)
    with pytest.raises(ImageReadError) as e:
        read_image(big, max_pixels=1_000_000)
    assert "over the limit" in str(e.value) and "corrupt" not in str(e.value)


def test_to_float01_scales_8_and_16_bit_pixels_and_refuses_other_types():
    u8, u16 = _rand_u8((5, 7, 3)), _rand_u16((4, 6))
    for raw, top in ((u8, 255), (u16, 65535)):
        out = to_float01(raw)
        assert out.dtype == np.float32 and out.shape == raw.shape
        assert np.array_equal(out, raw.astype(np.float32) / np.float32(top))
        edges = to_float01(np.array([0, top], dtype=raw.dtype))
        assert edges.tolist() == [0.0, 1.0]
    assert np.array_equal(to_float01(u16.astype(">u2")), to_float01(u16))  # byte order
    for bad in (u8.astype(np.float32), u8.astype(np.int16)):
        with pytest.raises(TypeError, match="expected uint8 or uint16 pixels"):
            to_float01(bad)
