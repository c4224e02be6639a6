"""The one centre crop (ramir.data.transforms) crops as each of the three it replaced."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ramir.attribution.analysis import check_crop
from ramir.data.transforms import center_crop, center_crop_box

# The three implementations before they became one, verbatim.


def old_analysis(img, size):  # ramir.attribution.analysis.center_crop: (C, H, W), strict
    if size == 0:
        return img
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise ValueError("smaller")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def old_loop(img, size):  # ramir.training.loop._center_crop: (..., H, W), clamped
    if size is None:
        return img
    h, w = img.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[..., y : y + ch, x : x + cw]


def old_mixture(a, size):  # ramir.data.mixture._center: (H, W, C) arrays, clamped
    h, w = a.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return a[y : y + ch, x : x + cw]


SIDES = [1, 2, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("h", "w", "size"), list(itertools.product(SIDES, SIDES, [1, 2, 3, 4, 7, 9]))
)
def test_the_shared_crop_matches_every_old_one(h, w, size):
    img = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w)
    arr = img.permute(1, 2, 0).numpy()
    ours = center_crop(img, size)
    assert torch.equal(ours, old_loop(img, size))
    assert np.array_equal(center_crop(arr, size, channels_last=True), old_mixture(arr, size))
    assert np.array_equal(ours.permute(1, 2, 0).numpy(), old_mixture(arr, size))
    if h >= size and w >= size:
        assert torch.equal(ours, old_analysis(img, size))
        check_crop(h, w, size, "img")  # the analysis accepts it, and crops with the shared one
    else:
        with pytest.raises(ValueError, match="analysis crop"):
            check_crop(h, w, size, "img")


def test_no_size_leaves_the_image_alone_and_batches_crop_too():
    img = torch.rand(2, 3, 9, 6)
    assert center_crop(img, None) is img and center_crop(img, 0) is img
    check_crop(9, 6, 0, "img")  # images.crop: 0 keeps whole images of any size
    assert torch.equal(center_crop(img, 4), img[..., 2:6, 1:5])  # odd margin: extra at bottom
    assert center_crop_box(9, 6, 4) == (2, 1, 4, 4)
    assert center_crop_box(3, 6, 4) == (0, 1, 3, 4)  # a short side is kept whole
    with pytest.raises(ValueError, match="size >= 1"):
        center_crop_box(5, 5, -1)
