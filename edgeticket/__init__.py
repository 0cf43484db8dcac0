"""edgeticket: robust, transferable tickets for edge devices.

    import edgeticket as et
    source = et.load("resnet18_l2_eps3.ckpt")           # or et.pretrain(...)
    ticket = et.draw(source, method="omp", pattern="channel", sparsity=0.5)
    tuned = et.finetune(ticket, "digits", subset=300)
    et.evaluate(tuned, "digits"); et.export(tuned, "t50.onnx"); et.bench("t50.onnx", data="digits")

Every function mirrors its CLI command (`help(et.draw)`); see edgeticket.api.
"""

__version__ = "0.1.0"

__all__ = ["Ticket", "load", "pretrain", "draw", "finetune", "evaluate", "export", "bench", "sweep", "__version__"]


def __getattr__(name: str):
    """The API is imported on first use, so `edgeticket --help` does not pay for torch."""
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'edgeticket' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
