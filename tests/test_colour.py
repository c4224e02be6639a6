"""Colour profiles and multi-frame files: what a colour-managed viewer shows of a result
is what it showed of the input (Adobe RGB, sRGB, gray, 16-bit), CMYK is made RGB with a
note, a broken profile is a note, and an animation's dropped frames are a note."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms
from torch import nn

from ramir.data import colour
from ramir.data.read import read_array, read_image
from ramir.data.write import write_image

D50 = (0.9642, 1.0, 0.8249)
ADOBE_GAMMA = 563 / 256  # 2.19921875, the u8Fixed8 gamma of Adobe RGB (1998)
RELATIVE = ImageCms.Intent.RELATIVE_COLORIMETRIC


# ----------------------------------------------------------------------------- ICC bytes


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    # textDescriptionType: ASCII, then empty Unicode and ScriptCode parts (67-byte field)
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + bytes(8 + 3 + 67)


def _gamma_tag(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def build_icc(space: bytes, tags: dict[bytes, bytes], pcs: bytes = b"XYZ ") -> bytes:
    """An ICC v2.1 profile (display class unless CMYK) of the given tags, written byte by
    byte: header, tag table, tags 4-byte aligned."""
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, data in tags.items():
        table += struct.pack(">4sII", sig, offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    cls = b"prtr" if space == b"CMYK" else b"mntr"
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, cls, space, pcs)
    header += struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4)
    header += b"".join(_s15(v) for v in D50) + bytes(4 + 16 + 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _bradford_to_d50(xyz_white) -> np.ndarray:
    b = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    gain = (b @ np.array(D50)) / (b @ np.asarray(xyz_white))
    return np.linalg.inv(b) @ np.diag(gain) @ b


def rgb_colorants(primaries, white) -> np.ndarray:
    """Columns rXYZ, gXYZ, bXYZ (D50-adapted) of an RGB space with these xy primaries."""

    def xyz(xy):
        return np.array([xy[0] / xy[1], 1.0, (1 - xy[0] - xy[1]) / xy[1]])

    p = np.stack([xyz(c) for c in primaries], axis=1)
    w = xyz(white)
    m = p * np.linalg.solve(p, w)  # scaled so that (1, 1, 1) is the white
    return _bradford_to_d50(w) @ m


def adobe_rgb_icc() -> bytes:
    """Adobe RGB (1998) as a matrix/TRC profile: its primaries adapted to D50, gamma
    563/256."""
    m = rgb_colorants([(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)], (0.3127, 0.3290))
    trc = _gamma_tag(ADOBE_GAMMA)
    return build_icc(
        b"RGB ",
        {
            b"desc": _desc_tag("Adobe RGB (1998) test"),
            b"wtpt": _xyz_tag(D50),
            b"rXYZ": _xyz_tag(m[:, 0]),
            b"gXYZ": _xyz_tag(m[:, 1]),
            b"bXYZ": _xyz_tag(m[:, 2]),
            b"rTRC": trc,
            b"gTRC": trc,
            b"bTRC": trc,
        },
    )


def gray_icc(gamma: float = 1.8) -> bytes:
    return build_icc(
        b"GRAY",
        {
            b"desc": _desc_tag(f"Gray gamma {gamma} test"),
            b"wtpt": _xyz_tag(D50),
            b"kTRC": _gamma_tag(gamma),
        },
    )


def cmyk_icc() -> bytes:
    """A CMYK printer profile whose A2B0 (lut16, 2-point grid, Lab PCS) sends each
    CMYK corner to the Lab of the sRGB colour ``(1 - C)(1 - K), ...``."""
    corners = []
    for index in range(16):  # first channel varies slowest
        c, m, y, k = ((index >> s) & 1 for s in (3, 2, 1, 0))
        rgb = np.array([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], float)
        corners.append(_srgb_to_lab16(rgb))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft2\0\0\0\0" + bytes([4, 3, 2, 0]) + identity + struct.pack(">HH", 2, 2)
    lut += struct.pack(">8H", *([0, 65535] * 4))
    lut += b"".join(struct.pack(">3H", *c) for c in corners)
    lut += struct.pack(">6H", *([0, 65535] * 3))
    return build_icc(
        b"CMYK",
        {b"desc": _desc_tag("CMYK test"), b"wtpt": _xyz_tag(D50), b"A2B0": lut},
        pcs=b"Lab ",
    )


def _srgb_to_lab16(rgb: np.ndarray) -> tuple[int, int, int]:
    srgb_d50 = rgb_colorants([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)], (0.3127, 0.3290))
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    x, y, z = (srgb_d50 @ lin) / np.array(D50)

    def f(t):
        return np.cbrt(t) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    L, a, b = 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))
    # ICC v2 16-bit Lab: L 0..100 -> 0..0xFF00, a/b -128..127.996 -> 0..0xFFFF
    return (
        round(L / 100 * 0xFF00),
        round((a + 128) * 256),
        round((b + 128) * 256),
    )


# ----------------------------------------------------------------------------- a viewer


def shown(path) -> np.ndarray:
    """What a colour-managed viewer on an sRGB display shows of an 8-bit RGB or gray file:
    its pixels converted to sRGB with littlecms through its embedded profile (untagged
    files are sRGB)."""
    with Image.open(path) as im:
        im.load()
        icc = im.info.get("icc_profile")
        if not icc:
            return np.asarray(im.convert("RGB")).astype(np.int16)
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(
            im, src, ImageCms.createProfile("sRGB"), renderingIntent=RELATIVE, outputMode="RGB"
        )
    return np.asarray(out).astype(np.int16)


def saturation(rgb: np.ndarray) -> float:
    """Mean HSV saturation in percent."""
    rgb = rgb.astype(np.float64)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    return float(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0.0).mean() * 100)


def _hsv_sweep(h: int, w: int, s_range=(0.3, 0.85), v_range=(0.45, 0.9)) -> np.ndarray:
    """A smooth image: hue along x, saturation down y, value in waves (JPEG-friendly)."""
    y, x = np.mgrid[0:h, 0:w]
    hue = x / w
    sat = s_range[0] + (s_range[1] - s_range[0]) * y / max(h - 1, 1)
    val = v_range[0] + (v_range[1] - v_range[0]) * (0.5 + 0.5 * np.sin(x / 5.0 + y / 7.0))
    hsv = np.round(np.stack([hue, sat, val], axis=2) * 255).astype(np.uint8)
    return np.array(Image.fromarray(hsv, "HSV").convert("RGB"))


def _colourful(h=32, w=48) -> np.ndarray:
    """Adobe RGB values of saturated colours that sRGB can show (sRGB colours away from
    its edges, converted to Adobe RGB with littlecms): a photo's in-gamut colours."""
    srgb = _hsv_sweep(h, w)
    adobe = ImageCms.ImageCmsProfile(io.BytesIO(adobe_rgb_icc()))
    out = ImageCms.profileToProfile(
        Image.fromarray(srgb), ImageCms.createProfile("sRGB"), adobe, RELATIVE
    )
    return np.array(out)


def _linear(shown_rgb: np.ndarray) -> np.ndarray:
    v = shown_rgb / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


# ----------------------------------------------------------------------------- the profiles


def test_hand_built_adobe_rgb_profile_parses_and_transforms_as_adobe_rgb():
    icc = adobe_rgb_icc()
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    assert ImageCms.getProfileDescription(profile).strip() == "Adobe RGB (1998) test"
    m = np.array([profile.profile.red_colorant[0], profile.profile.green_colorant[0]])
    # Adobe's own profile: rXYZ (0.6097, 0.3111, 0.0195), gXYZ (0.2053, 0.6257, 0.0609)
    assert np.allclose(m, [[0.6097, 0.3111, 0.0195], [0.2053, 0.6257, 0.0609]], atol=1e-3)
    colours = np.array([[[0, 255, 0], [128, 128, 128], [255, 255, 255], [0, 0, 0]]], np.uint8)
    srgb = np.asarray(
        ImageCms.profileToProfile(
            Image.fromarray(colours), profile, ImageCms.createProfile("sRGB"), RELATIVE
        )
    ).astype(int)
    green, gray, white, black = srgb[0]
    assert green[1] == 255 and green[0] == 0 and green[2] <= 5  # at (beyond) sRGB's edge
    assert np.all(np.abs(gray - 128) <= 3)  # gamma 2.2 vs the sRGB curve: close
    assert white.tolist() == [255, 255, 255] and black.tolist() == [0, 0, 0]


def test_hand_built_gray_and_cmyk_profiles_parse():
    for icc, space in ((gray_icc(), "GRAY"), (cmyk_icc(), "CMYK")):
        p = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        assert p.profile.xcolor_space.strip() == space
    t = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(cmyk_icc())),
        ImageCms.createProfile("sRGB"),
        "CMYK",
        "RGB",
        renderingIntent=RELATIVE,
    )
    cmyk = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 0, 0]]], np.uint8), "CMYK")
    cyan, paper = np.asarray(ImageCms.applyTransform(cmyk, t)).astype(int)[0]
    assert cyan[0] <= 10 and cyan[1] >= 245 and cyan[2] >= 245
    assert np.all(paper >= 250)


def test_our_srgb_matches_littlecms_srgb():
    """The module's sRGB (primaries, curve) is littlecms's: its profile reads as sRGB."""

    p = colour.parse_profile(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    assert p.is_srgb and p.space == "RGB"
    assert np.allclose(p.matrix, colour._SRGB_TO_XYZ_D50, atol=1e-3)
    assert not colour.parse_profile(adobe_rgb_icc()).is_srgb


# ----------------------------------------------------------------------------- Adobe RGB


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_adobe_rgb_round_trip_shows_the_same_colours(tmp_path, suffix):
    a = _colourful()
    src = tmp_path / f"adobe{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(src, a, photometric="rgb", iccprofile=adobe_rgb_icc())
    else:
        kw = (
            {"quality": 98} if suffix == ".jpg" else {"lossless": True} if suffix == ".webp" else {}
        )
        Image.fromarray(a).save(src, icc_profile=adobe_rgb_icc(), **kw)
    img = read_image(src)
    assert img.icc_profile == adobe_rgb_icc() and img.icc_converted and img.notes == ()
    # the network sees sRGB: what the viewer shows of the input
    net = np.round(img.rgb.numpy().transpose(1, 2, 0) * 255)
    assert np.abs(net - shown(src)).max() <= 1
    out = write_image(tmp_path / f"out{suffix}", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == adobe_rgb_icc() or suffix == ".tif"
    if suffix == ".tif":
        with tifffile.TiffFile(out) as tif:
            assert bytes(tif.pages[0].tags[34675].value) == adobe_rgb_icc()
    elif suffix == ".jpg":  # a second JPEG generation: chroma subsampling loses a little
        assert np.abs(shown(out) - shown(src)).mean() < 2.0
        with Image.open(out) as im:  # as a viewer ignoring the profile (the old output) shows
            dropped = np.asarray(im.convert("RGB")).astype(np.int16)
        assert np.abs(dropped - shown(src)).mean() > 8
    else:
        assert np.abs(shown(out) - shown(src)).max() <= 1
    if suffix in (".png", ".webp", ".tif"):  # lossless: the file's own values come back
        assert np.array_equal(read_array(out, max_pixels=None).pixels, read_array(src).pixels)
        with Image.open(out) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), a)


def test_adobe_rgb_restore_keeps_saturation_as_shown(tmp_path):
    """The review's case: an Adobe RGB photo must not come back desaturated. An identity
    "model" through ramir.restore_files: what the viewer shows is unchanged."""
    from ramir.inference.batch import restore_files

    a = _colourful(64, 96)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(a).save(d / "photo.png", icc_profile=adobe_rgb_icc())
    report = restore_files(nn.Identity(), [d], tmp_path / "out", progress=False)
    assert report.ok and [j.note for j in report.written] == [""]
    out = tmp_path / "out" / "photo.png"
    before, after = shown(d / "photo.png"), shown(out)
    as_dropped = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)  # no profile
    s_in, s_out, s_dropped = saturation(before), saturation(after), saturation(as_dropped)
    print(
        f"shown saturation: input {s_in:.1f}, output {s_out:.1f}, profile dropped {s_dropped:.1f}"
    )
    assert np.abs(after - before).max() <= 1
    assert abs(s_out - s_in) < 0.2 and s_dropped < s_in - 3


def test_ramir_restore_api_carries_the_profile(tmp_path):
    import ramir

    Image.fromarray(_colourful()).save(tmp_path / "a.jpg", icc_profile=adobe_rgb_icc())
    result = ramir.restore(nn.Identity(), tmp_path / "a.jpg")
    assert result.icc_profile == adobe_rgb_icc() and result.icc_converted
    out = write_image(tmp_path / "b.jpg", result.rgb, like=result)
    assert np.abs(shown(out) - shown(tmp_path / "a.jpg")).mean() < 2.0


def test_out_of_gamut_adobe_colours_are_shown_as_srgb_shows_them(tmp_path):
    """Adobe RGB colours outside sRGB are clipped to sRGB's edge on reading (what a
    colour-managed sRGB display shows too); the output shows them the same up to the
    8-bit Adobe RGB step, which is amplified near a channel's zero (tiny in light)."""
    a = _hsv_sweep(32, 48, s_range=(0.6, 1.0), v_range=(0.5, 1.0))  # taken as Adobe RGB
    a[0, 0] = (0, 255, 0)
    Image.fromarray(a).save(tmp_path / "g.png", icc_profile=adobe_rgb_icc())
    img = read_image(tmp_path / "g.png")
    assert img.rgb.min() >= 0 and img.rgb.max() <= 1
    assert torch.allclose(img.rgb[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=0.02)
    net = np.round(img.rgb.numpy().transpose(1, 2, 0) * 255)
    before = shown(tmp_path / "g.png")
    assert np.abs(net - before).max() <= 1
    out = write_image(tmp_path / "o.png", img.rgb, like=img)
    after = shown(out)
    outside = (net == 0).any(axis=2) | (net == 255).any(axis=2)
    assert outside.mean() > 0.2  # the test has many clipped colours
    assert np.abs(after - before)[~outside].max() <= 1
    assert np.abs(_linear(after) - _linear(before)).max() < 0.01


def test_bmp_output_of_an_adobe_input_is_srgb_without_profile(tmp_path):
    Image.fromarray(_colourful()).save(tmp_path / "a.png", icc_profile=adobe_rgb_icc())
    img = read_image(tmp_path / "a.png")
    out = write_image(tmp_path / "a.bmp", img.rgb, like=img)
    assert np.abs(shown(out) - shown(tmp_path / "a.png")).max() <= 1


# ----------------------------------------------------------------------------- sRGB, gray


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_srgb_profile_bytes_are_kept_and_pixels_untouched(tmp_path, suffix):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    a = _colourful()
    Image.fromarray(a).save(tmp_path / f"s{suffix}", icc_profile=icc, quality=98)
    img = read_image(tmp_path / f"s{suffix}")
    assert img.icc_profile == icc and not img.icc_converted and img.notes == ()
    plain = np.array(read_array(tmp_path / f"s{suffix}").pixels)
    assert torch.equal(img.rgb, torch.from_numpy(plain.transpose(2, 0, 1)).float() / 255)
    out = write_image(tmp_path / f"o{suffix}", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.info["icc_profile"] == icc
    diff = np.abs(shown(out) - shown(tmp_path / f"s{suffix}"))
    assert diff.mean() < 1.5 if suffix == ".jpg" else diff.max() == 0


@pytest.mark.parametrize("bits", [8, 16])
def test_gray_profile_is_kept_and_gray_stays_gray(tmp_path, bits):
    g = np.linspace(0, 1, 40 * 30).reshape(30, 40)
    maxval = 2**bits - 1
    pixels = np.round(g * maxval).astype(np.uint8 if bits == 8 else np.uint16)
    src = tmp_path / "g.png"
    if bits == 8:
        Image.fromarray(pixels, "L").save(src, icc_profile=gray_icc(1.8))
    else:
        Image.fromarray(pixels.astype(np.int32), "I").convert("I;16").save(
            src, icc_profile=gray_icc(1.8)
        )
    img = read_image(src)
    assert img.mode == "gray" and img.icc_profile == gray_icc(1.8) and img.icc_converted
    # gamma 1.8 shown on an sRGB display: darker mid-tones than the raw values
    expect = 1.055 * (g**1.8) ** (1 / 2.4) - 0.055
    expect = np.where(g**1.8 <= 0.0031308, g**1.8 * 12.92, expect)
    assert np.abs(img.rgb[0].numpy() - expect).max() < 1.5 / maxval + 1e-3
    out = write_image(tmp_path / "o.png", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.info["icc_profile"] == gray_icc(1.8) and im.mode in ("L", "I;16", "I")
        assert np.array_equal(np.asarray(im).astype(np.int64), pixels.astype(np.int64))
    if bits == 8:
        assert np.abs(shown(out) - shown(src)).max() <= 1


# ----------------------------------------------------------------------------- 16-bit


def test_16bit_adobe_png_is_converted_in_float_keeping_16_bits(tmp_path):
    """16-bit: converted with the profile's matrix and curves in float (no 8-bit step);
    the output is a 16-bit Adobe RGB PNG whose values come back exactly."""
    a8 = _colourful()
    a16 = a8.astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 200, a8.shape).astype(
        np.uint16
    )
    src = tmp_path / "a16.png"
    tmp = tmp_path / "plain16.png"
    write_image(tmp, torch.from_numpy(a16.transpose(2, 0, 1) / 65535.0), bit_depth=16)
    from ramir.data.write import _png_with_icc

    src.write_bytes(_png_with_icc(tmp.read_bytes(), adobe_rgb_icc()))
    img = read_image(src)
    assert img.bit_depth == 16 and img.icc_converted and img.icc_profile == adobe_rgb_icc()
    v = img.rgb.numpy()
    assert np.unique(np.round(v * 65535) % 257).size > 50  # not 8-bit values in disguise
    # the colours an independent float computation gives (test's own Adobe/sRGB matrices)
    adobe = rgb_colorants([(0.64, 0.33), (0.21, 0.71), (0.15, 0.06)], (0.3127, 0.3290))
    srgb = rgb_colorants([(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)], (0.3127, 0.3290))
    lin = np.clip((a16 / 65535.0) ** ADOBE_GAMMA @ (np.linalg.inv(srgb) @ adobe).T, 0, 1)
    expect = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    assert np.abs(v.transpose(1, 2, 0) - expect).max() < 1.5e-3
    out = write_image(tmp_path / "o16.png", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.info["icc_profile"] == adobe_rgb_icc()
    back = read_array(out)
    assert back.bit_depth == 16 and back.icc_converted
    import png

    _, _, rows, _ = png.Reader(filename=str(out)).asDirect()
    stored = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(a16.shape)
    assert np.abs(stored.astype(int) - a16.astype(int)).max() <= 1


def test_16bit_png_with_lut_profile_is_kept_as_is_with_a_note(tmp_path, monkeypatch):
    from ramir.data import write as rio

    real = colour.parse_profile

    def lut_only(data):  # the Adobe profile as if it were LUT-based
        p = real(data)
        return colour.Profile(p.data, p.space, p.description, p.cms, None, None, False)

    monkeypatch.setattr(colour, "parse_profile", lut_only)
    a16 = np.random.default_rng(2).integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    tmp = tmp_path / "p.png"
    write_image(tmp, torch.from_numpy(a16.transpose(2, 0, 1) / 65535.0), bit_depth=16)
    (tmp_path / "l.png").write_bytes(rio._png_with_icc(tmp.read_bytes(), adobe_rgb_icc()))
    img = read_image(tmp_path / "l.png")
    assert not img.icc_converted and img.icc_profile == adobe_rgb_icc()
    assert img.notes and "not applied" in img.notes[0] and "16-bit" in img.notes[0]
    assert np.array_equal(np.round(img.rgb.numpy().transpose(1, 2, 0) * 65535), a16)
    out = write_image(tmp_path / "o.png", img.rgb, like=img)
    assert np.array_equal(read_array(out).pixels, a16)
    with Image.open(out) as im:
        assert im.info["icc_profile"] == adobe_rgb_icc()
    # 8-bit with a LUT profile goes through littlecms
    Image.fromarray(_colourful()).save(tmp_path / "l8.png", icc_profile=adobe_rgb_icc())
    img8 = read_image(tmp_path / "l8.png")
    assert img8.icc_converted and img8.notes == ()
    assert (
        np.abs(
            np.round(img8.rgb.numpy().transpose(1, 2, 0) * 255) - shown(tmp_path / "l8.png")
        ).max()
        == 0
    )
    out8 = write_image(tmp_path / "o8.png", img8.rgb, like=img8)
    assert np.abs(shown(out8) - shown(tmp_path / "l8.png")).max() <= 2


# ----------------------------------------------------------------------------- CMYK, broken


@pytest.mark.parametrize("with_profile", [True, False])
def test_cmyk_jpeg_becomes_rgb_with_a_note(tmp_path, with_profile):
    rng = np.random.default_rng(4)
    cmyk = rng.integers(0, 256, (16, 20, 4), dtype=np.uint8)
    kw = {"icc_profile": cmyk_icc()} if with_profile else {}
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=100, **kw)
    img = read_image(tmp_path / "c.jpg")
    assert img.mode == "rgb" and img.rgb.shape == (3, 16, 20)
    assert img.icc_profile is None and not img.icc_converted
    assert len(img.notes) == 1 and "CMYK image converted to RGB" in img.notes[0]
    assert "the output is an RGB file" in img.notes[0]
    assert ("'CMYK test'" in img.notes[0]) == with_profile
    with Image.open(tmp_path / "c.jpg") as im:
        if with_profile:  # what a colour-managed viewer shows
            t = ImageCms.buildTransform(
                ImageCms.ImageCmsProfile(io.BytesIO(cmyk_icc())),
                ImageCms.createProfile("sRGB"),
                "CMYK",
                "RGB",
                renderingIntent=RELATIVE,
                flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
            )
            expect = np.asarray(ImageCms.applyTransform(im, t))
        else:
            expect = np.asarray(im.convert("RGB"))
    got = np.round(img.rgb.numpy().transpose(1, 2, 0) * 255)
    assert np.abs(got - expect).max() <= 1
    out = write_image(tmp_path / "o.jpg", img.rgb, like=img)
    with Image.open(out) as im:
        assert im.mode == "RGB" and "icc_profile" not in im.info


def test_cmyk_jpeg_note_reaches_ramir_restore(tmp_path, capsys, monkeypatch):
    from ramir.inference.batch import restore_files

    Image.fromarray(np.full((16, 16, 4), 60, np.uint8), "CMYK").save(tmp_path / "c.jpg")
    report = restore_files(nn.Identity(), [tmp_path / "c.jpg"], tmp_path / "o", progress=False)
    assert report.ok and "CMYK image converted to RGB" in report.written[0].note
    with Image.open(tmp_path / "o" / "c.jpg") as im:
        assert im.mode == "RGB"


def test_cmyk_tiff_becomes_rgb_with_a_note(tmp_path):
    cmyk = np.random.default_rng(5).integers(0, 256, (8, 9, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    img = read_image(tmp_path / "c.tif")
    assert img.mode == "rgb" and img.alpha is None and "CMYK image converted" in img.notes[0]
    expect = np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB"))
    assert np.abs(np.round(img.rgb.numpy().transpose(1, 2, 0) * 255) - expect).max() <= 1


@pytest.mark.parametrize(
    "icc",
    [b"not a profile at all", adobe_rgb_icc()[:200], b"\0" * 36 + b"acsp" + b"\xff" * 200],
    ids=["garbage", "truncated", "bad-tags"],
)
def test_a_broken_profile_is_a_note_not_a_crash(tmp_path, icc):
    a = _colourful()
    Image.fromarray(a).save(tmp_path / "b.png", icc_profile=icc)
    img = read_image(tmp_path / "b.png")
    assert img.icc_profile is None and not img.icc_converted
    assert len(img.notes) == 1 and "colour profile cannot be read" in img.notes[0]
    assert "/" not in img.notes[0]  # no server paths in notes
    assert torch.equal(img.rgb, torch.from_numpy(a.transpose(2, 0, 1)).float() / 255)
    out = write_image(tmp_path / "o.png", img.rgb, like=img)
    with Image.open(out) as im:
        assert "icc_profile" not in im.info
    assert np.array_equal(read_array(out).pixels, a)


def test_an_rgb_profile_on_a_gray_image_is_ignored_with_a_note(tmp_path):
    g = np.random.default_rng(6).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.jpg", icc_profile=adobe_rgb_icc(), quality=100)
    img = read_image(tmp_path / "g.jpg")
    assert img.mode == "gray" and img.icc_profile is None and "is ignored" in img.notes[0]


# ----------------------------------------------------------------------------- frames


def _frames(n=3, h=20, w=24):
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("suffix", [".webp", ".png", ".tif"])
def test_animations_restore_the_first_frame_with_a_note(tmp_path, suffix):
    from ramir.inference.batch import restore_files

    frames = _frames()
    src = tmp_path / f"anim{suffix}"
    if suffix == ".tif":
        with tifffile.TiffWriter(src) as tif:
            for f in frames:
                tif.write(f, photometric="rgb")
    else:
        ims = [Image.fromarray(f) for f in frames]
        kw = {"lossless": True} if suffix == ".webp" else {}
        ims[0].save(src, save_all=True, append_images=ims[1:], **kw)
    img = read_image(src)
    assert np.array_equal(np.round(img.rgb.numpy().transpose(1, 2, 0) * 255), frames[0])
    what = {".webp": "animated WEBP with 3 frames", ".png": "animated PNG with 3 frames"}
    expected = what.get(suffix, "TIFF with 3 pages: only the first page is restored")
    assert len(img.notes) == 1 and expected in img.notes[0]
    report = restore_files(nn.Identity(), [src], tmp_path / "o", progress=False)
    assert report.ok and expected in report.written[0].note
    out = tmp_path / "o" / src.name
    assert np.array_equal(read_array(out).pixels, frames[0])
    if suffix != ".tif":
        with Image.open(out) as im:
            assert getattr(im, "n_frames", 1) == 1


def test_animated_gif_note_says_png_and_first_frame(tmp_path, capsys):
    from ramir.inference.batch import restore_files

    ims = [Image.fromarray(f).convert("P") for f in _frames(2)]
    ims[0].save(tmp_path / "anim.gif", save_all=True, append_images=ims[1:])
    report = restore_files(nn.Identity(), [tmp_path / "anim.gif"], tmp_path / "o", progress=False)
    note = report.written[0].note
    assert note.startswith("written as PNG (.gif cannot be written)")
    assert "animated GIF with 2 frames: only the first frame is restored" in note


def test_single_frame_files_have_no_note(tmp_path):
    Image.fromarray(_frames(1)[0]).save(tmp_path / "one.webp", lossless=True)
    Image.fromarray(_frames(1)[0]).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.webp").notes == ()
    assert read_image(tmp_path / "one.png").notes == ()


def test_cli_prints_the_notes(tmp_path, capsys, monkeypatch):
    """``ramir restore`` prints each written job's note (the GIF mechanism)."""
    import ramir.checkpoint
    from ramir.cli import main

    monkeypatch.setattr(ramir.checkpoint, "load_model", lambda *a, **k: nn.Identity())
    ims = [Image.fromarray(f) for f in _frames(2)]
    ims[0].save(tmp_path / "a.webp", save_all=True, append_images=ims[1:], lossless=True)
    assert main(["restore", str(tmp_path / "a.webp"), "-o", str(tmp_path / "o"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "a.webp: animated WEBP with 2 frames: only the first frame is restored" in err


def test_png_iccp_chunk_is_valid():
    from ramir.data.write import _png_with_icc

    b = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(b, format="PNG")
    data = _png_with_icc(b.getvalue(), b"hello")
    length = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"iCCP" and zlib.decompress(data[41 + 13 : 41 + length]) == b"hello"
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["icc_profile"] == b"hello"


def test_a_profile_littlecms_cannot_apply_is_a_note(tmp_path, monkeypatch):

    real = colour.parse_profile

    def lut_only(data):
        p = real(data)
        return colour.Profile(p.data, p.space, p.description, p.cms, None, None, False)

    def refuse(*args):
        raise ImageCms.PyCMSError("cannot build transform")

    monkeypatch.setattr(colour, "parse_profile", lut_only)
    monkeypatch.setattr(colour, "_cms_transform", refuse)
    a = _colourful()
    Image.fromarray(a).save(tmp_path / "a.png", icc_profile=adobe_rgb_icc())
    img = read_image(tmp_path / "a.png")
    assert img.icc_profile is None and not img.icc_converted
    assert "cannot be applied (cannot build transform)" in img.notes[0]
    assert torch.equal(img.rgb, torch.from_numpy(a.transpose(2, 0, 1)).float() / 255)
