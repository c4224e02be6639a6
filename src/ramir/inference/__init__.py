"""Inference: restoring images with a trained model.

* :mod:`ramir.inference.restore`: one image or a batch (tensor, file or
  :class:`~ramir.data.read.LoadedImage`), whole or tiled, with self-ensembles;
  :func:`ramir.restore` is its :func:`~ramir.inference.restore.restore`;
* :mod:`ramir.inference.tiling`: overlapping tiles blended without seams;
* :mod:`ramir.inference.context`: the whole image's pooled statistics replayed in every
  tile (global context);
* :mod:`ramir.inference.batching`: same-shape parts (tiles, images) through the network
  ``batch_size`` at a time, ``"auto"`` from the GPU's free memory;
* :mod:`ramir.inference.plan`: files, folders and globs planned into outputs (never over
  an input), their sizes and same-size groups;
* :mod:`ramir.inference.batch`: restoring them into an output folder, under ``torchrun``
  shared among processes;
* :mod:`ramir.inference.sharding`: same-size groups, balancing over ranks, reader and
  writer threads (also used by :mod:`ramir.evaluation`);
* :mod:`ramir.inference.export`: ONNX export checked with ONNX Runtime.

This package imports nothing itself (each name has one import path, its module's).
"""
