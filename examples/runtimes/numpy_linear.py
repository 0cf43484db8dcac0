"""A runtime plugin in one file: linear classifiers as an .npz of weights, run by numpy.

Put this file in a folder named by $EDGETICKET_RUNTIMES (or make it an `edgeticket.runtimes` entry point) and
`edgeticket devices` lists it, `export -o model.npz` writes it and `bench model.npz` times it. The top level
imports the standard library and numpy only: the bench runner loads this same file, here or on a board."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME, FORMAT, SUFFIX = "numpy-linear", "npz", ".npz"
PROVIDERS = ("cpu",)
PRECISIONS = ("fp32",)
TOLERANCE = (1e-4, 1e-5)  # float32 sums in another order than torch's
MODULE, DISTRIBUTIONS = "numpy", ("numpy",)
DEVICES = {"numpy-linear-1t": {"provider": "cpu", "threads": 1, "precision": "fp32",
                               "stands_for": "any CPU with numpy: a linear probe's latency floor"}}


def open_model(path: str, provider: str, threads: int, precision: str):
    """images [1, C, H, W] float32 -> logits [1, classes]; `threads` is numpy's BLAS's business."""
    with np.load(path, allow_pickle=False) as weights:
        weight, bias = weights["weight"], weights["bias"]
    return lambda images: images.reshape(len(images), -1) @ weight.T + bias


def write(module, example, path: Path) -> None:
    """The model's weight matrix and bias, read off by running it: f(0) is the bias, f(e_i) - f(0) is column i.
    A model that is not affine (a CNN) gets a wrong matrix, and export's parity check refuses it."""
    import torch
    pixels = example[0].numel()
    with torch.no_grad():
        bias = module(torch.zeros_like(example))[0]
        weight = (module(torch.eye(pixels).reshape(pixels, *example.shape[1:])) - bias).T
    with open(path, "wb") as file:  # a file object: np.savez would append .npz to the staging name
        np.savez(file, weight=weight.numpy().astype(np.float32), bias=bias.numpy().astype(np.float32))
