"""One resumable training state in one file: the modules' weights, the optimizer's slots and groups, random-number
states and a run's own fields, as safetensors (no pickle) with JSON metadata, written through a temporary file and
checked against its `.sha256` sidecar before anything is loaded from it. The transformer SFT run and the VAE run
both keep their state this way; each names its own format, which a load must match."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from eva_runtime.atomic_file import replaced_atomically
from eva_runtime.file_hash import file_sha256

__all__ = ["load_train_state", "save_train_state"]

_OPTIMIZER = "optim."


def save_train_state(
    path: Path,
    format_name: str,
    modules: Mapping,
    optimizer,
    tensors: Mapping | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """`modules`: name -> torch module (its state under `name.`); `tensors`: other tensors kept as named (RNG
    states); `metadata`: strings kept as named. The sidecar is written after the file is whole."""
    import torch
    from safetensors.torch import save_file

    stored = {
        f"{name}.{key}": value.detach().contiguous()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    saved = optimizer.state_dict()
    for index, slots in saved["state"].items():
        for key, value in slots.items():
            stored[f"{_OPTIMIZER}{index}.{key}"] = torch.as_tensor(value).contiguous()
    for name, value in (tensors or {}).items():
        if name.split(".", 1)[0] in modules or name.startswith(_OPTIMIZER):
            raise ValueError(f"tensor name {name!r} collides with a module's or the optimizer's")
        stored[name] = value.contiguous()
    fields = {**dict(metadata or {}), "format": format_name, "optimizer_groups": json.dumps(saved["param_groups"])}
    with replaced_atomically(path) as temporary:
        save_file({k: v.cpu() for k, v in stored.items()}, str(temporary), metadata=fields)
    Path(str(path) + ".sha256").write_text(file_sha256(path) + "\n")


def load_train_state(
    path: Path, format_name: str, modules: Mapping, optimizer, check: Callable[[dict[str, str]], None] | None = None
) -> tuple[dict, dict[str, str]]:
    """Load the modules (strictly) and the optimizer in place; returns (the other tensors, the metadata). Refuses a
    file whose sidecar hash differs or whose format is another run's; `check(metadata)` may refuse it (by raising)
    before anything is loaded."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    sidecar = Path(str(path) + ".sha256")
    if not sidecar.is_file() or sidecar.read_text().strip() != file_sha256(path):
        raise ValueError(f"{path}: SHA-256 does not match {sidecar.name}; refusing a corrupted checkpoint")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != format_name:
        raise ValueError(f"{path}: format {metadata.get('format')!r}, expected {format_name!r}")
    if check is not None:
        check(metadata)
    stored = load_file(str(path))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}, strict=True)
    slots: dict[int, dict] = {}
    for name, value in stored.items():
        if name.startswith(_OPTIMIZER):
            _, index, key = name.split(".", 2)
            slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads(metadata["optimizer_groups"])})
    others = {k: v for k, v in stored.items() if k.split(".", 1)[0] not in modules and not k.startswith(_OPTIMIZER)}
    return others, metadata
