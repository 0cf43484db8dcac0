"""Architectures and checkpoint readers."""

from .archs import (ArchSpec, get_arch, get_model, list_models, load_weights, replace_submodule,  # noqa: F401
                    residual_blocks)
