"""Checkpoints of an alignment run (see :mod:`.align`): the LoRA adapter, the optimiser state and the run state
(iteration, checks, best), written to and resumed from one directory (``OUT/last/``).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["load_state", "save_state"]


def save_state(directory: Path, unwrapped, optimizer, parameters, state: dict) -> None:
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from eva_runtime.world_model.wan.lora import save_lora

    directory.mkdir(parents=True, exist_ok=True)
    save_lora(unwrapped, "align", directory / "lora")
    adapter = {
        k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unwrapped, adapter_name="align").items()
    }
    save_file(adapter, directory / "adapter_state.safetensors")
    tensors = {}
    for index, parameter in enumerate(parameters):
        for name, value in optimizer.state.get(parameter, {}).items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    save_file(tensors, directory / "optimizer.safetensors")
    (directory / "state.json").write_text(json.dumps(state, indent=2))


def load_state(directory: Path, unwrapped, optimizer, parameters) -> dict:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(unwrapped, load_file(directory / "adapter_state.safetensors"), adapter_name="align")
    tensors = load_file(directory / "optimizer.safetensors")
    for index, parameter in enumerate(parameters):
        entries = {key.split(".", 1)[1]: value for key, value in tensors.items() if key.split(".", 1)[0] == str(index)}
        if entries:
            optimizer.state[parameter] = entries
    return json.loads((directory / "state.json").read_text())
