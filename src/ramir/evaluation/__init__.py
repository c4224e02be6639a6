"""Evaluation: PSNR/SSIM under named conventions and benchmark tables.

>>> from ramir.evaluation.metrics import psnr, ssim, compute_metrics
"""

from ramir.evaluation.metrics import CONVENTIONS, Convention, compute_metrics, psnr, ssim

__all__ = ["CONVENTIONS", "Convention", "compute_metrics", "psnr", "ssim"]
