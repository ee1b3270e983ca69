"""Which ONNX Runtime distribution is installed; refuses none, and refuses both.

`onnxruntime` (CPU, the `runtime` extra) and `onnxruntime-gpu` (the `gpu` extra) install the same
`onnxruntime` module; with both present, whichever was installed last silently wins. Pip cannot express the
conflict, so the runtime checks before it loads a model.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

__all__ = ["DISTRIBUTIONS", "OnnxRuntimeInstallError", "installed_onnxruntime"]

DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


class OnnxRuntimeInstallError(RuntimeError):
    """Zero or two ONNX Runtime distributions are installed."""


def installed_onnxruntime(version_of: Callable[[str], str] = metadata.version) -> tuple[str, str]:
    """Return (distribution, version) of the one ONNX Runtime installed, or raise with the fix."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            found.append((name, version_of(name)))
        except metadata.PackageNotFoundError:
            continue
    if len(found) == 1:
        return found[0]
    if not found:
        raise OnnxRuntimeInstallError(
            "no ONNX Runtime installed: pip install 'eva-runtime[runtime]' (CPU) or 'eva-runtime[gpu]' (CUDA)"
        )
    raise OnnxRuntimeInstallError(
        "both onnxruntime and onnxruntime-gpu are installed and overwrite each other's module; "
        "pip uninstall -y onnxruntime onnxruntime-gpu, then install exactly one of the extras 'runtime' or 'gpu'"
    )
