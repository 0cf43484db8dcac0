"""Offline datasets as in-memory uint8 tensors; nothing is ever downloaded."""

from .datasets import (DataConfig, ImageSplits, TensorImages, check_classes, list_datasets, load_dataset,  # noqa: F401
                       stratified_subset)
