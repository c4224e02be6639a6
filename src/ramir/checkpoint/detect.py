"""Architecture detection: which registered backbone a bare state dict is, and its size.

A file without ramir's metadata (a release, or a plain state dict) says nothing of its
architecture. Each backbone answers for its own layout (``detect`` and
``kwargs_from_state_dict`` beside its class, :mod:`ramir.models.detection`);
:func:`infer_arch` asks them in the registry's detection order
(:func:`ramir.models.detectors`, more specific layouts first) and takes the first yes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ramir.errors import CheckpointError
from ramir.models import MODELS, detectors

__all__ = ["infer_arch"]


def infer_arch(
    state_dict: Mapping[str, torch.Tensor], hint: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Guess the architecture and its constructor arguments from parameter names/shapes.

    Files without ramir metadata are releases: RAM's (``ram_swinir``, ``ram_promptir``,
    ImageNet-normalised input) or the field's (``nafnet``, ``swinir``, ``restormer``,
    ``promptir``), which get their own input convention (RGB in [0, 1]; NAFNet's zero
    padding). Classic SwinIR's ``img_range`` is not stored: window 7 means the JPEG
    models (255), otherwise the denoising models (1).

    RAM++'s networks are asked first: the AdaSAM mask generator is told by its keys; its
    pretraining Restormer has a plain Restormer's keys, so it is recognised only when
    ``hint`` (the file name or the architecture asked for) contains ``woskip``, as the
    release's ``RestormerWoSkip.pth`` does. RAM++'s fine-tuned RestormerRFR is told by its
    DINO fusion gates (its DINOv2 is not in the file: ``load_model(path, dino=DIR)``).
    A backbone registered with :func:`ramir.models.add_model` is asked in its place in
    the order.

    Raises:
        CheckpointError: no architecture fits, or the names fit one but entries its
            size is read from are missing or mis-shaped (a partial state dict).
    """
    try:
        for detector in detectors():
            if detector.detect(state_dict, hint):
                return detector.name, detector.kwargs_from_state_dict(state_dict)
    except CheckpointError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        what = f"entry {e}" if isinstance(e, KeyError) else f"an entry ({type(e).__name__}: {e})"
        raise CheckpointError(
            "the checkpoint's parameter names look like a known architecture, but "
            f"{what} that its size is read from is missing or mis-shaped: is it a partial "
            "or edited state dict? A complete file loads; ramir cannot guess the rest"
        ) from None
    raise CheckpointError(
        "cannot recognise the architecture from the checkpoint's parameter names "
        f"(first keys: {', '.join(list(state_dict)[:5])}); pass arch=NAME "
        f"(one of: {', '.join(MODELS.names())})"
    )
