"""What does edgeticket's training loop cost over a bare PyTorch loop, and what does PGD-k cost?

    python benchmarks/train_overhead.py [--images 4096] [--epochs 3] [--repeats 3]

Same model (small_resnet), data (Fashion-MNIST), batch size (64) and optimizer for both loops; each loop
runs --repeats times, interleaved, and the best epoch throughput of each is compared (the machines are
shared and noisy). Also: images/s of a PGD-k (L2) adversarial step relative to a natural step.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from edgeticket.attacks import AttackConfig
from edgeticket.console import console, set_mode
from edgeticket.data import DataConfig, TensorImages, load_dataset
from edgeticket.tables import rows_table
from edgeticket.train import TrainConfig, fit, pretrain


def bare_loop(ticket, data: TensorImages, config: TrainConfig) -> float:
    """The 15-line loop every PyTorch user writes; returns its best epoch's images/s."""
    torch.manual_seed(config.seed)
    model = ticket.deployable().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    best = 0.0
    for _ in range(config.epochs):
        began = time.perf_counter()
        for indices in torch.split(torch.randperm(len(data)), config.batch_size):
            images, labels = data.batch(indices)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        best = max(best, len(data) / (time.perf_counter() - began))
    return best


def edgeticket_loop(ticket, data: TensorImages, config: TrainConfig) -> float:
    return max(record.images_per_s for record in fit(ticket, data, config)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pgd-steps", type=int, default=3)
    args = parser.parse_args()
    set_mode(quiet=True)
    splits = load_dataset(DataConfig("fashion-mnist", subset=args.images))
    ticket, _ = pretrain("small_resnet", splits, TrainConfig(epochs=1))
    natural = TrainConfig(epochs=args.epochs, lr=0.01)
    adversarial = TrainConfig(epochs=args.epochs, lr=0.01, attack=AttackConfig.parse("l2:1.0", args.pgd_steps))
    bare = ours = pgd = 0.0
    for _ in range(args.repeats):
        bare = max(bare, bare_loop(ticket, splits.train, natural))
        ours = max(ours, edgeticket_loop(ticket, splits.train, natural))
        pgd = max(pgd, edgeticket_loop(ticket, splits.train, adversarial))
    rows_table(f"training throughput: small_resnet, Fashion-MNIST {args.images} images, batch 64, "
               f"{torch.get_num_threads()} threads",
               ["loop", "images/s", "relative"],
               [["bare PyTorch loop", f"{bare:.0f}", "1.00"],
                ["edgeticket fit (natural)", f"{ours:.0f}", f"{ours / bare:.2f}"],
                [f"edgeticket fit (PGD-{args.pgd_steps} L2)", f"{pgd:.0f}", f"{pgd / ours:.2f} of natural"]])
    console.print(f"edgeticket / bare = {ours / bare:.2f} (target >= 0.9); "
                  f"one PGD-{args.pgd_steps} step costs {ours / pgd:.1f}x a natural step")


if __name__ == "__main__":
    main()
