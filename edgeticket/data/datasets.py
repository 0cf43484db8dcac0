"""Dataset registry. Every reader returns uint8 NCHW tensors; `load_dataset` resizes them to the model's
input, matches its channels, and draws a stratified subset. Images stay in [0, 1] pixel space: the model
(and the exported graph) applies its own normalization."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..console import warn
from ..errors import EdgeticketError
from ..registry import Registry

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


@dataclass
class TensorImages:
    """Images as uint8 [N, C, H, W] and int64 labels; batches are sliced, not collated item by item."""
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices].float().div_(255.0), self.labels[indices]

    def head(self, count: int | None) -> "TensorImages":
        """The first `count` images (all when None)."""
        return self if not count or count >= len(self) else TensorImages(self.images[:count], self.labels[:count])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) in order, over the first `limit` images (all when None)."""
        for indices in torch.split(torch.arange(min(len(self), limit or len(self))), batch_size):
            yield self.batch(indices)


@dataclass
class ImageSplits:
    name: str
    train: TensorImages
    test: TensorImages
    class_names: list[str]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean/std of the training pixels: the normalization a model pretrained here keeps."""
        pixels = self.train.images[:10000].float().div(255.0)
        return tuple(pixels.mean((0, 2, 3)).tolist()), tuple(pixels.std((0, 2, 3)).tolist())


@dataclass
class DataConfig:
    name: str
    root: str | None = None        # --data-root; also $EDGETICKET_DATA
    subset: int | None = None      # N stratified training images (Utrera et al., Table 7)
    seed: int = 0
    image_size: int | None = None  # resize to the model's input
    channels: int | None = None    # 1 -> 3 (or 3 -> 1) to match the model


Reader = Callable[[list[Path]], ImageSplits]


@dataclass(frozen=True)
class DatasetSpec:
    read: Reader
    subfolders: tuple[str, ...] = ("",)  # looked for under each data root
    system: str | None = None             # where a system package puts it


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def list_datasets() -> list[str]:
    return DATASETS.names()


def search_roots(root: str | None, *subfolders: str, system: str | None = None) -> list[Path]:
    """Where a dataset may live: --data-root, $EDGETICKET_DATA (each with the dataset's subfolder), then the system path."""
    bases = [Path(b) for b in (root, os.environ.get("EDGETICKET_DATA")) if b]
    paths = [base / sub for base in bases for sub in (*subfolders, "")]
    return list(dict.fromkeys(paths + ([Path(system)] if system else [])))


def missing(name: str, tried: list[Path], files: list[str], provide: str) -> EdgeticketError:
    where = ", ".join(str(p) for p in tried) or "nowhere (no --data-root or $EDGETICKET_DATA given)"
    return EdgeticketError(f"{name} not found: looked for {files[0]} in {where}", hint=provide)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx_dataset(name: str, classes: list[str], provide: str, system: str | None = None) -> DatasetSpec:
    def read(roots: list[Path]) -> ImageSplits:
        for root in roots:
            found = [next((root / (f + ext) for ext in (".gz", "") if (root / (f + ext)).is_file()), None)
                     for f in IDX_FILES]
            if all(found):
                arrays = [torch.from_numpy(_read_idx(p).copy()) for p in found]
                return ImageSplits(name, TensorImages(arrays[0].unsqueeze(1), arrays[1].long()),
                                   TensorImages(arrays[2].unsqueeze(1), arrays[3].long()), classes)
        raise missing(name, roots, [f + ".gz" for f in IDX_FILES], provide)
    return DatasetSpec(read, (name,), system)


DATASETS.add("fashion-mnist", idx_dataset(
    "fashion-mnist", FASHION_CLASSES, "install it: sudo apt-get install dataset-fashion-mnist",
    system="/usr/share/datasets/fashion-mnist"))
DATASETS.add("mnist", idx_dataset("mnist", [str(i) for i in range(10)],
                                  "put the four MNIST IDX .gz files in DATA_ROOT/mnist (--data-root or $EDGETICKET_DATA)"))
DATASETS.add("kmnist", idx_dataset("kmnist", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
                                   "put the four KMNIST IDX .gz files in DATA_ROOT/kmnist (--data-root or $EDGETICKET_DATA)"))


def digits(roots: list[Path]) -> ImageSplits:
    """scikit-learn's 1,797 8x8 digits with a fixed seeded, stratified 2:1 train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    bunch = load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    train, test = train_test_split(np.arange(len(labels)), test_size=1 / 3, random_state=0, stratify=bunch.target)
    return ImageSplits("digits", TensorImages(images[train], labels[train]), TensorImages(images[test], labels[test]),
                       [str(i) for i in range(10)])


def torchvision_dataset(name: str, constructor: str, split_kwargs: tuple[dict, dict], folder: str) -> DatasetSpec:
    def read(roots: list[Path]) -> ImageSplits:
        import torchvision.datasets as tvd
        for root in roots:
            try:
                parts = [getattr(tvd, constructor)(str(root), download=False, **kw) for kw in split_kwargs]
            except (RuntimeError, FileNotFoundError, OSError):
                continue
            as_tensor = [TensorImages(torch.from_numpy(np.asarray(p.data)).permute(0, 3, 1, 2).contiguous()
                                      if np.asarray(p.data).shape[-1] == 3 else torch.from_numpy(np.asarray(p.data)),
                                      torch.as_tensor(getattr(p, "targets", getattr(p, "labels", None))).long())
                         for p in parts]
            classes = list(getattr(parts[0], "classes", [str(i) for i in range(int(as_tensor[0].labels.max()) + 1)]))
            return ImageSplits(name, as_tensor[0], as_tensor[1], classes)
        raise missing(name, roots, [folder], f"put the torchvision {name} files under DATA_ROOT "
                                             "(--data-root or $EDGETICKET_DATA); edgeticket never downloads")
    return DatasetSpec(read, (name,))


DATASETS.add("cifar10", torchvision_dataset("cifar10", "CIFAR10", ({"train": True}, {"train": False}),
                                            "cifar-10-batches-py"))
DATASETS.add("cifar100", torchvision_dataset("cifar100", "CIFAR100", ({"train": True}, {"train": False}),
                                             "cifar-100-python"))
DATASETS.add("svhn", torchvision_dataset("svhn", "SVHN", ({"split": "train"}, {"split": "test"}), "train_32x32.mat"))


def imagefolder(roots: list[Path]) -> ImageSplits:
    """DATA_ROOT/train/<class>/*.png and DATA_ROOT/test/<class>/*.png (or val/), read into memory."""
    from PIL import Image
    for root in roots:
        test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
        if not ((root / "train").is_dir() and test_dir):
            continue
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())

        def read_split(folder: Path) -> TensorImages:
            images, labels = [], []
            for label, name in enumerate(classes):
                for file in sorted((folder / name).glob("*")):
                    with Image.open(file) as image:
                        images.append(torch.from_numpy(np.asarray(image.convert("RGB").resize((64, 64)))).permute(2, 0, 1))
                    labels.append(label)
            return TensorImages(torch.stack(images), torch.tensor(labels))
        return ImageSplits(root.name, read_split(root / "train"), read_split(test_dir), classes)
    raise missing("imagefolder", roots, ["train/<class>/ and test/<class>/"], "pass --data-root DIR")


def gaussian_noise(roots: list[Path]) -> ImageSplits:
    """Clipped Gaussian-noise images (mean 0.5, std 0.25): an OOD set that needs no files."""
    generator = torch.Generator().manual_seed(0)
    make = lambda n: (torch.randn(n, 1, 32, 32, generator=generator) * 64 + 128).clamp(0, 255).byte()
    return ImageSplits("gaussian-noise", TensorImages(make(2000), torch.zeros(2000, dtype=torch.long)),
                       TensorImages(make(2000), torch.zeros(2000, dtype=torch.long)), ["noise"])


DATASETS.add("digits", DatasetSpec(digits))
DATASETS.add("gaussian-noise", DatasetSpec(gaussian_noise))
DATASETS.add("imagefolder", DatasetSpec(imagefolder))


def _resize(images: TensorImages, size: int | None, channels: int | None, chunk: int = 512) -> TensorImages:
    """Match the model's channels and size; in chunks, so a float copy of the whole set never exists."""
    def convert(x: torch.Tensor) -> torch.Tensor:
        if channels and x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.float().mean(1, keepdim=True).round().byte()
        if size and x.shape[-1] != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp_(0, 255).byte()
        return x.contiguous()
    return TensorImages(torch.cat([convert(x) for x in torch.split(images.images, chunk)]), images.labels)


def check_classes(model: str, predicted: int | None, data: str, expected: int) -> None:
    """A model on data with another number of classes scores 0% or crashes on a label past its outputs."""
    if predicted is not None and predicted != expected:
        raise EdgeticketError(f"{model} predicts {predicted} classes but {data} has {expected}",
                              hint="use the dataset the model was finetuned on (--data NAME; `edgeticket inspect` "
                                   "shows it), or bench without --data")


def stratified_subset(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` indices with the class proportions of `labels`, drawn with a fixed seed."""
    from sklearn.model_selection import train_test_split
    if count >= len(labels):
        return torch.arange(len(labels))
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=count, random_state=seed, stratify=labels.numpy())
    return torch.from_numpy(np.sort(chosen))


def load_dataset(config: DataConfig) -> ImageSplits:
    spec = DATASETS.get(config.name)
    splits = spec.read(search_roots(config.root, *spec.subfolders, system=spec.system))
    train = splits.train
    if config.subset and config.subset > len(train):
        warn(f"--subset {config.subset} is more than the {len(train)} training images of {splits.name}: all are used")
    if config.subset:
        keep = stratified_subset(train.labels, config.subset, config.seed)
        train = TensorImages(train.images[keep], train.labels[keep])
    train, test = (_resize(s, config.image_size, config.channels) for s in (train, splits.test))
    return ImageSplits(splits.name, train, test, splits.class_names)
