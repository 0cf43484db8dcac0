"""One training loop for pretrain and finetune: modes, adversarial/noise objectives, masks, resume, DDP.

Resume: after every epoch the model, optimizer, scheduler and RNG state go atomically to a state file;
re-running the same command continues from the last finished epoch. The batch order of an epoch depends
only on (seed, epoch), so an interrupted and resumed run ends with the same weights as an uninterrupted one.

Scale-out: under `torchrun --nproc_per_node=N` the loop wraps the model in DistributedDataParallel (gloo on
CPU, nccl on GPUs) and shards every batch with a DistributedSampler; only rank 0 writes files.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from .attacks import perturb
from .config import FINETUNE, PRETRAIN, AttackConfig, TrainConfig  # noqa: F401  (re-exported)
from .batchnorm import reestimate_batchnorm
from .console import progress_bar
from .data import ImageSplits, TensorImages
from .errors import EdgeticketError
from .fileio import read_torch, save_torch
from .models import get_arch, get_model, replace_submodule, residual_blocks
from .masks import apply_masks
from .ticket import Ticket


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    accuracy: float       # training accuracy, a percentage (as every accuracy edgeticket reports)
    images_per_s: float
    lr: float
    seconds: float


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, env: Distributed) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgeticketError(f"--device {name} asked for, but this machine has no CUDA GPU", hint="use --device cpu")
    return torch.device(name)


def trainable_modules(model: nn.Module, mode: str, arch: str) -> list[nn.Module] | None:
    """None for whole-model training; otherwise the modules that train (everything else is frozen, BN included)."""
    if mode == "whole":
        return None
    head = [model.get_submodule(get_arch(arch).classifier)]
    if mode == "linear":
        return head
    count = int(mode.split(":")[1])
    blocks = residual_blocks(model)
    if count > len(blocks):
        raise EdgeticketError(f"--mode {mode}: {arch} has only {len(blocks)} residual blocks", hint=f"K <= {len(blocks)}")
    return (blocks[-count:] if count else []) + head


def set_train_mode(model: nn.Module, modules: list[nn.Module] | None) -> None:
    if modules is None:
        model.train()
        return
    model.eval()
    for module in modules:
        module.train()


def freeze(model: nn.Module, modules: list[nn.Module] | None) -> list[nn.Parameter]:
    trainable = {id(p) for m in modules for p in m.parameters()} if modules is not None else None
    params = []
    for p in model.parameters():
        p.requires_grad_(trainable is None or id(p) in trainable)
        if p.requires_grad:
            params.append(p)
    return params


def epoch_batches(count: int, config: TrainConfig, env: Distributed, epoch: int) -> list[torch.Tensor]:
    """This process's batches for one epoch; the order depends only on (seed, epoch)."""
    sampler = DistributedSampler(range(count), num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                 seed=config.seed)
    sampler.set_epoch(epoch)
    indices = torch.tensor(list(sampler))
    return list(torch.split(indices, max(1, config.batch_size // env.world_size)))


def fingerprint(config: TrainConfig, ticket: Ticket, data: TensorImages) -> str:
    """What a resume state must match: the recipe, the starting weights and the data."""
    weights = float(sum(v.double().sum() for v in ticket.state_dict.values() if v.is_floating_point()))
    return json.dumps({"config": asdict(config), "weights": round(weights, 6), "images": len(data),
                       "labels": int(data.labels.sum())}, sort_keys=True, default=str)


RESUME_KEYS = {"fingerprint", "model", "optimizer", "scheduler", "rng", "epoch", "history"}


def read_resume(path: Path, print_key: str) -> dict:
    """A killed run's per-epoch state, if it is one this run can continue; else an error naming the file."""
    restart = f"pass --restart to start over (it deletes {path.name})"
    try:
        state = read_torch(path)
    except EdgeticketError as error:
        raise EdgeticketError(f"cannot resume from {path}: {error.message}", hint=restart) from None
    if not isinstance(state, dict) or not RESUME_KEYS <= set(state):
        raise EdgeticketError(f"cannot resume from {path}: it is not an edgeticket resume state", hint=restart)
    if state["fingerprint"] != print_key:
        raise EdgeticketError(f"{path.name} belongs to a different run (other recipe, weights or data)", hint=restart)
    return state


def fit(ticket: Ticket, data: TensorImages, config: TrainConfig, state_path: str | Path | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None, description: str = "train") -> tuple[Ticket, list[EpochRecord]]:
    """Train `ticket` on `data` and return it with its new weights (masks enforced after every step)."""
    config.validate()
    env = Distributed.from_env()
    if env.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo")
    device = pick_device(config.device, env)
    torch.manual_seed(config.seed + env.rank)
    network = ticket.deployable().to(device)
    modules = trainable_modules(network.model, config.mode, ticket.arch)
    params = freeze(network.model, modules)
    masks = {k: v.to(device) for k, v in ticket.masks.items()}
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestones(), gamma=0.1)
    history: list[EpochRecord] = []
    start_epoch, print_key = 0, fingerprint(config, ticket, data)
    state_path = Path(state_path) if state_path else None
    if state_path and state_path.exists():
        state = read_resume(state_path, print_key)
        network.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], [EpochRecord(**r) for r in state["history"]]
    runner = DistributedDataParallel(network) if env.enabled else network
    batches_per_epoch = len(epoch_batches(len(data), config, env, 0))
    with progress_bar() as bar:
        task = bar.add_task(description, total=config.epochs * batches_per_epoch,
                            completed=start_epoch * batches_per_epoch, status=f"epoch {start_epoch}/{config.epochs}")
        for epoch in range(start_epoch, config.epochs):
            set_train_mode(network.model, modules)
            totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
            began = time.perf_counter()
            for indices in epoch_batches(len(data), config, env, epoch):
                images, labels = data.batch(indices)
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                inputs = perturb(network, images, labels, config.attack)
                logits = runner(inputs)
                loss = F.cross_entropy(logits, labels)
                if not torch.isfinite(loss):
                    raise EdgeticketError(f"the training loss became {loss.item()} in epoch {epoch + 1}",
                                          hint="lower --lr, or check the data and the starting weights")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if masks:
                    apply_masks(network.model, masks)
                totals += torch.tensor([loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(), len(labels)],
                                       dtype=torch.float64)
                bar.update(task, advance=1)
            if env.enabled:
                dist.all_reduce(totals)
            seconds = time.perf_counter() - began
            record = EpochRecord(epoch + 1, float(totals[0] / totals[2]), float(100 * totals[1] / totals[2]),
                                 float(totals[2] / seconds), scheduler.get_last_lr()[0], seconds)
            scheduler.step()
            history.append(record)
            bar.update(task, status=f"epoch {epoch + 1}/{config.epochs} loss {record.loss:.3f} "
                                    f"acc {record.accuracy:.1f}% {record.images_per_s:.0f} img/s")
            if state_path and env.is_main:
                save_torch({"fingerprint": print_key, "epoch": epoch + 1, "model": network.model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "rng": torch.get_rng_state(), "history": [asdict(r) for r in history]}, state_path)
            if on_epoch and env.is_main:
                on_epoch(record)
    settle_batchnorm(network, modules, data, config, device)
    trained = ticket.with_model(network.model.cpu().eval())
    return trained, history


def settle_batchnorm(network: nn.Module, modules: list[nn.Module] | None, data: TensorImages, config: TrainConfig,
                     device: torch.device) -> None:
    """Re-estimate the trained BatchNorms' statistics on the training objective's inputs (PGD examples made by
    the final model, noisy or clean images), so eval mode matches what training saw (see batchnorm.py)."""
    if config.batchnorm_images == 0:
        return
    attacker = copy.deepcopy(network).eval()  # attacks see the final statistics, not half re-estimated ones
    inputs = (perturb(attacker, images.to(device), labels.to(device), config.attack)
              for images, labels in data.batches(config.batch_size, config.batchnorm_images))
    reestimate_batchnorm(network, inputs, modules)



def recipe(config: TrainConfig, data_name: str, images: int) -> dict:
    return {**asdict(config), "attack": config.attack.label, "data": data_name, "train_images": images}


def replace_head(ticket: Ticket, class_names: list[str], seed: int) -> Ticket:
    """A fresh classifier for the target's classes; the features (and their masks) are kept."""
    model = ticket.build_model()
    classifier = get_arch(ticket.arch).classifier
    old = model.get_submodule(classifier)
    torch.manual_seed(seed)
    replace_submodule(model, classifier, nn.Linear(old.in_features, len(class_names)))
    masks = {k: v for k, v in ticket.masks.items() if not k.startswith(f"{classifier}.")}
    return ticket.with_model(model, arch_kwargs={**ticket.arch_kwargs, "num_classes": len(class_names)},
                             class_names=list(class_names), masks=masks)


SOURCE_KINDS = {"none": "natural", "l2": "robust", "linf": "robust", "noise": "noise"}


def finetune(ticket: Ticket, splits: ImageSplits, config: TrainConfig, state_path: str | Path | None = None,
             on_epoch: Callable[[EpochRecord], None] | None = None) -> tuple[Ticket, list[EpochRecord]]:
    """Transfer a ticket to the target task: new head, then train in the chosen mode; sparsity is kept."""
    start = replace_head(ticket, splits.class_names, config.seed)
    trained, history = fit(start, splits.train, config, state_path, on_epoch, description=f"finetune {splits.name}")
    trained.provenance.target = splits.name
    trained.add_stage("finetune", **recipe(config, splits.name, len(splits.train)))
    return trained, history


def pretrain(arch: str, splits: ImageSplits, config: TrainConfig, start: Ticket | None = None,
             state_path: str | Path | None = None, on_epoch: Callable[[EpochRecord], None] | None = None,
             arch_kwargs: dict | None = None) -> tuple[Ticket, list[EpochRecord]]:
    """Train a source model (natural, adversarial or noise) from scratch, or continue from `start`."""
    if start is None:
        kwargs = {"num_classes": len(splits.class_names), "in_channels": splits.channels, **(arch_kwargs or {})}
        torch.manual_seed(config.seed)  # the initial weights too: the same command gives the same source
        model = get_model(arch, **kwargs)
        mean, std = splits.pixel_stats()
        start = Ticket(arch, kwargs, model.state_dict(), (splits.channels, splits.image_size, splits.image_size),
                       mean, std, list(splits.class_names))
    elif start.class_names != list(splits.class_names):
        start = replace_head(start, splits.class_names, config.seed)
    trained, history = fit(start, splits.train, config, state_path, on_epoch, description=f"pretrain {splits.name}")
    trained.provenance.source_kind = SOURCE_KINDS[config.attack.kind]
    trained.provenance.threat_model = config.attack.label
    trained.provenance.source_data = splits.name
    trained.add_stage("pretrain", **recipe(config, splits.name, len(splits.train)))
    return trained, history


def state_file(output: str | Path) -> Path:
    """Where a run writing `output` keeps its per-epoch resume state."""
    output = Path(output)
    return output.with_name(output.name + ".resume")


def save_result(ticket: Ticket, output: str | Path) -> None:
    """Rank 0 writes the result atomically and drops the resume state; other ranks write nothing."""
    if Distributed.from_env().is_main:
        ticket.save(output)
        state_file(output).unlink(missing_ok=True)
