import gzip

import numpy as np
import pytest
import torch

from edgeticket.data import DataConfig, load_dataset, stratified_subset
from edgeticket.errors import EdgeticketError


def write_idx(folder, count=40):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", count), ("t10k", count // 2)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    return images


def test_idx_reader_from_data_root(tmp_path):
    write_idx(tmp_path / "mnist")
    splits = load_dataset(DataConfig("mnist", root=str(tmp_path)))
    assert splits.train.images.shape == (40, 1, 28, 28) and splits.test.images.shape == (20, 1, 28, 28)
    assert splits.train.labels[:3].tolist() == [0, 1, 2]


def test_missing_files_name_every_path_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETICKET_DATA", str(tmp_path / "env"))
    with pytest.raises(EdgeticketError) as error:
        load_dataset(DataConfig("kmnist", root=str(tmp_path / "root")))
    assert str(tmp_path / "root" / "kmnist") in error.value.message and str(tmp_path / "env") in error.value.message
    assert "KMNIST" in error.value.hint


def test_digits_resized_to_three_channels_and_split_fixed():
    a = load_dataset(DataConfig("digits", image_size=28, channels=3))
    b = load_dataset(DataConfig("digits", image_size=28, channels=3))
    assert a.train.images.shape[1:] == (3, 28, 28) and len(a.train) + len(a.test) == 1797
    assert torch.equal(a.test.labels, b.test.labels)
    assert torch.equal(a.train.images[:, 0], a.train.images[:, 2])


def test_subset_is_stratified_and_seeded():
    labels = torch.arange(1000) % 10
    a, b, c = stratified_subset(labels, 100, 0), stratified_subset(labels, 100, 0), stratified_subset(labels, 100, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert labels[a].bincount().tolist() == [10] * 10


def test_fashion_mnist_from_debian_package():
    splits = load_dataset(DataConfig("fashion-mnist", subset=50))
    assert len(splits.train) == 50 and len(splits.test) == 10000 and splits.class_names[0] == "T-shirt/top"
