"""ExecuTorch: torch.export, lowered to the XNNPACK delegate, serialized as a .pte (batch 1, like the device).

A .pte holds no free-form metadata, so edgeticket's goes beside it as `<file>.pte.json`. ExecuTorch's Python
runtime imports torch itself (it links libtorch), so a board needs torch to run a .pte."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME, FORMAT, SUFFIX, ORDER = "executorch", "executorch", ".pte", 1
PROVIDERS = CPU_PROVIDERS = ("xnnpack",)
PRECISIONS = ("fp32",)
TOLERANCE = (1e-3, 0.0)  # XNNPACK's own conv kernels and blocking (measured: <= 4e-6)
MODULE, DISTRIBUTIONS = "executorch", ("executorch",)
BOARD_PACKAGES = ("executorch", "torch")
DEFAULT_DEVICES = {"fp32": "executorch-xnnpack-1t"}


def method(path: str | Path, threads: int = 1):
    """The program's `forward`, with `threads` XNNPACK worker threads."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    portable_lib._unsafe_reset_threadpool(threads)
    return Runtime.get().load_program(str(path)).load_method("forward")


def open_model(path: str, provider: str, threads: int, precision: str):
    """The program runs batch 1 (as exported), so a batch goes through it image by image."""
    forward = method(path, threads)
    import torch  # already loaded by ExecuTorch: its tensors are the method's inputs
    run = lambda image: forward.execute([torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))])[0].numpy()
    return lambda images: np.concatenate([run(images[i:i + 1]) for i in range(len(images))])


def unavailable_reason(provider: str) -> str | None:
    """None when ExecuTorch's Python runtime and its XNNPACK lowering import here, else why not."""
    from edgeticket.console import native_output_captured
    try:
        with native_output_captured():  # importing it logs torch deprecation warnings
            import executorch.runtime  # noqa: F401
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    except Exception as error:  # an ImportError, or a binary built for another torch
        return f"executorch does not import ({type(error).__name__}); pip install 'edgeticket[edge]'"
    return None


def write(module, example, path: Path) -> None:
    """ExecuTorch's serializer works in temp folders (flatc's input and output): they go to this process's work
    folder ($TMPDIR/edgeticket-UID/PID), which the next command sweeps if this one is killed."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgeticket.fileio import redirected_tempdir
    with redirected_tempdir():
        program = to_edge_transform_and_lower(torch.export.export(module, (example,)),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()
        Path(path).write_bytes(program.buffer)
