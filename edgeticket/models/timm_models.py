"""timm's models as architectures (`timm:NAME`, the optional `edgeticket[timm]` extra): built with random
weights through `timm.create_model`, their first conv, classifier, mean, std and input size read from the
model's pretrained config, so timm's own checkpoints (`.pth`, `.safetensors`) load like any other."""

from __future__ import annotations

import difflib
from functools import cache

from torch import nn

from ..errors import EdgeticketError
from .spec import ArchSpec

PREFIX = "timm:"


def _timm():
    try:
        import timm
    except ImportError:
        raise EdgeticketError("timm architectures need timm, which is not installed",
                              hint="pip install 'edgeticket[timm]'") from None
    return timm


@cache
def timm_arch(name: str) -> ArchSpec:
    """The spec of `timm:NAME` (NAME may carry a pretrained tag, e.g. inception_v3.tf_adv_in1k)."""
    timm, model_name = _timm(), name.removeprefix(PREFIX)
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=5)
        raise EdgeticketError(f"unknown timm model '{model_name}'",
                              hint=f"timm has e.g. {', '.join(close)}" if close else "see timm.list_models()")
    try:
        cfg = timm.get_pretrained_cfg(model_name)
    except RuntimeError as error:  # a known model with an unknown tag (resnet50.bogus)
        tags = timm.list_pretrained(model_name.split(".")[0] + ".*")[:5]
        raise EdgeticketError(f"timm model '{model_name}': {error}", hint=f"timm's tags for it: {', '.join(tags)}") from None
    if not (isinstance(cfg.first_conv, str) and isinstance(cfg.classifier, str)):
        raise EdgeticketError(f"timm model '{model_name}' has no single first conv and classifier "
                              f"(first_conv={cfg.first_conv!r}, classifier={cfg.classifier!r})",
                              hint="edgeticket prunes models with one stem conv and one classifier head")

    def build(num_classes: int, in_channels: int) -> nn.Module:
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels)

    return ArchSpec(name, build, cfg.first_conv, cfg.classifier, input_size=cfg.input_size[-1],
                    mean=tuple(cfg.mean), std=tuple(cfg.std))
