"""Is a robust ticket's adversarial accuracy real, or do its gradients hide? The usual checks (Athalye et al.,
Carlini et al.): more PGD steps must not lower it much, a larger eps must drive it to zero, and examples
transferred from another model (no gradients of this one) must be weaker than white-box ones.

    python scripts/gradient_masking.py ROBUST.ticket NATURAL.ticket [--images 599]
"""

import argparse
import json

import torch

import edgeticket as et
from edgeticket.attacks import pgd
from edgeticket.config import AttackConfig
from edgeticket.data import DataConfig, load_dataset


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return 100 * float((model(images).argmax(1) == labels).float().mean())


def linf(eps: float, steps: int) -> AttackConfig:
    return AttackConfig("linf", eps, steps, step_size=2 / 255)  # the eval's conventions: step 2/255, random start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("robust")
    parser.add_argument("natural")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--images", type=int, default=599)
    args = parser.parse_args()
    torch.manual_seed(0)
    robust, natural = et.load(args.robust), et.load(args.natural)
    test = load_dataset(DataConfig(args.data, image_size=robust.input_size[-1], channels=robust.input_size[0])).test
    images, labels = test.batch(torch.arange(min(args.images, len(test))))
    target, source = robust.deployable(), natural.deployable()
    transferred = pgd(source, images, labels, linf(8 / 255, 20))
    rows = {"clean": accuracy(target, images, labels),
            "PGD-20 8/255": accuracy(target, pgd(target, images, labels, linf(8 / 255, 20)), labels),
            "PGD-100 8/255": accuracy(target, pgd(target, images, labels, linf(8 / 255, 100)), labels),
            "PGD-20 16/255": accuracy(target, pgd(target, images, labels, linf(16 / 255, 20)), labels),
            "PGD-20 32/255": accuracy(target, pgd(target, images, labels, linf(32 / 255, 20)), labels),
            "PGD-20 8/255 from the natural ticket (transfer)": accuracy(target, transferred, labels),
            "natural ticket under its own PGD-20 8/255": accuracy(source, transferred, labels)}
    print(json.dumps({"robust": args.robust, "natural": args.natural, "images": len(labels),
                      "accuracy_percent": {k: round(v, 2) for k, v in rows.items()}}, indent=2))


if __name__ == "__main__":
    main()
