"""IDM checkpoints in safetensors: weights, optimizer state and RNG state, with the configuration as metadata.

No pickle: tensors go into safetensors, everything else into its string metadata as JSON. A SHA-256 sidecar
(`<file>.sha256`) is written with every checkpoint and checked on load, and weights load strictly, so a wrong
or corrupted checkpoint is an error, never a silently half-loaded model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eva_runtime.atomic_file import replaced_atomically
from eva_runtime.file_hash import file_sha256
from eva_runtime.idm.config import IdmConfig
from eva_runtime.idm.network import InverseDynamicsModel

__all__ = ["CheckpointError", "TrainingState", "load_checkpoint", "save_checkpoint"]

FORMAT = "eva-runtime/idm-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, of another format or does not match the model."""


@dataclass
class TrainingState:
    step: int = 0
    epoch: int = 0
    data_digest: str = ""
    numpy_rng: dict | None = None
    history: list[dict] | None = None


def save_checkpoint(
    path: Path, model: InverseDynamicsModel, optimizer: torch.optim.Optimizer | None, state: TrainingState
) -> Path:
    tensors = {f"model.{name}": value.detach().contiguous() for name, value in model.state_dict().items()}
    groups = []
    if optimizer is not None:
        saved = optimizer.state_dict()
        for index, slots in saved["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).contiguous()
        groups = saved["param_groups"]
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "format": FORMAT,
        "config": model.config.to_json(),
        "optimizer_groups": json.dumps(groups),
        "state": json.dumps(
            {
                "step": state.step,
                "epoch": state.epoch,
                "data_digest": state.data_digest,
                "numpy_rng": state.numpy_rng,
                "history": state.history or [],
            }
        ),
    }
    with replaced_atomically(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    Path(str(path) + ".sha256").write_text(file_sha256(path) + "\n")
    return path


def load_checkpoint(
    path: Path,
    optimizer_for: type[torch.optim.Optimizer] | None = None,
    restore_rng: bool = False,
    **optimizer_kwargs: float,
) -> tuple[InverseDynamicsModel, torch.optim.Optimizer | None, TrainingState]:
    """Model (strictly loaded), optimizer (if a class is given) and training state from a checkpoint file.

    `restore_rng` also resets torch's global random state to the saved one: only a resumed run wants that."""
    path = Path(path)
    sidecar = Path(str(path) + ".sha256")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not sidecar.is_file():
        raise CheckpointError(f"{path}: missing {sidecar.name}; refusing an unverified checkpoint")
    expected = sidecar.read_text().strip()
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(f"{path}: SHA-256 {actual[:12]}... does not match {sidecar.name} ({expected[:12]}...)")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    config = IdmConfig.from_json(metadata["config"])
    tensors = load_file(str(path))
    model = InverseDynamicsModel(config)
    weights = {name[len("model.") :]: value for name, value in tensors.items() if name.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match the configured network: {error}") from None
    info = json.loads(metadata["state"])
    state = TrainingState(info["step"], info["epoch"], info["data_digest"], info["numpy_rng"], info["history"])
    optimizer = None
    if optimizer_for is not None:
        optimizer = optimizer_for(model.parameters(), **optimizer_kwargs)
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, index, key = name.split(".", 2)
                slots.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": slots, "param_groups": json.loads(metadata["optimizer_groups"])})
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
    return model, optimizer, state
