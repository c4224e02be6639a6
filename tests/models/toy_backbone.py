"""A backbone added in one file (docs/adding-a-backbone.md): a small residual CNN.

Importing this module registers it: ``ramir.build_model("toy_resnet")`` builds it and
``ramir.load_model`` recognises a plain state dict of it, with no other file changed.
``tests/models/test_detection.py`` imports it and unregisters it afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ramir.models import add_model
from ramir.models.base import RestorationModel
from ramir.models.detection import count_children

NAME = "toy_resnet"


class ToyResNet(RestorationModel):
    """``(B, in_chans, H, W)`` normalised -> the same: ``x + tail(body(head(x)))``, a
    3x3 head to ``width`` channels, ``num_blocks`` conv-ReLU blocks, a 3x3 tail."""

    def __init__(
        self,
        in_chans: int = 3,
        width: int = 8,
        num_blocks: int = 2,
        normalization: str = "imagenet",
    ) -> None:
        super().__init__(normalization=normalization)
        self.in_chans = self.out_chans = in_chans
        self.head = nn.Conv2d(in_chans, width, 3, padding=1)
        self.body = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
                for _ in range(num_blocks)
            )
        )
        self.tail = nn.Conv2d(width, in_chans, 3, padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(self.head(x)))


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """Its three names: ``head``, numbered ``body`` blocks, ``tail``."""
    return {"head.weight", "body.0.0.weight", "tail.weight"} <= state_dict.keys()


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``head.weight`` is ``(width, in_chans, 3, 3)``; the blocks are counted."""
    head = state_dict["head.weight"]
    return {
        "in_chans": int(head.shape[1]),
        "width": int(head.shape[0]),
        "num_blocks": count_children(state_dict, "body"),
    }


add_model(NAME, ToyResNet, detect=detect, kwargs_from_state_dict=kwargs_from_state_dict)
