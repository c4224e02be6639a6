"""Layer attribution for RAM's second stage (docs/method.md#mac): MAC, baselines, selection.

>>> from ramir.attribution import mask_attribution_conductance, select_layers, freeze_except
>>> scores = mask_attribution_conductance(model, lq, steps=200)  # doctest: +SKIP
>>> layers = select_layers(scores, 0.1)  # doctest: +SKIP
>>> trainable, total = freeze_except(model, layers)  # doctest: +SKIP
"""

from ramir.attribution.dualmask import DualMaskResult, dual_mask_predict
from ramir.attribution.io import LayerScores, MacResult, load_mac, ranked, save_mac
from ramir.attribution.mac import (
    DEFAULT_CHUNK,
    integrated_gradients_conductance,
    mask_attribution_conductance,
    random_scores,
)
from ramir.attribution.path import mask_path_alphas, random_orders, soft_reveal_masks
from ramir.attribution.plot import plot_mac, plot_ranking
from ramir.attribution.selection import (
    check_layer_names,
    freeze_except,
    layer_param_counts,
    list_layers,
    select_layers,
    trainable_parameters,
)
from ramir.attribution.targets import Target, gradient_magnitude

__all__ = [
    "DEFAULT_CHUNK",
    "DualMaskResult",
    "LayerScores",
    "MacResult",
    "Target",
    "check_layer_names",
    "dual_mask_predict",
    "freeze_except",
    "gradient_magnitude",
    "integrated_gradients_conductance",
    "layer_param_counts",
    "list_layers",
    "load_mac",
    "mask_attribution_conductance",
    "mask_path_alphas",
    "plot_mac",
    "plot_ranking",
    "random_orders",
    "random_scores",
    "ranked",
    "save_mac",
    "select_layers",
    "soft_reveal_masks",
    "trainable_parameters",
]
