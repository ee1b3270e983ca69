"""Checkpoints of an alignment run (see :mod:`.align`): the LoRA adapter, the optimiser state and the run state
(iteration, checks, best), written to and resumed from one directory (``OUT/last/``); and the run's identity
(``OUT/run.json``: its settings and the hashes of the files it trains from), which a resumption must share.
"""

from __future__ import annotations

import json
from pathlib import Path

from eva_runtime.atomic_file import write_text_atomically
from eva_runtime.bundle import bundle_content_sha256
from eva_runtime.file_hash import file_sha256

__all__ = ["claim_run", "load_state", "save_state"]

RUN_FORMAT = "eva-runtime/align-run-v1"


def claim_run(out: Path, config, resume: bool) -> dict:
    """Write OUT/run.json for a new run; on resumption refuse, naming the first field that differs, a run begun
    with other settings or from other files (iterations and how often it reports may change)."""
    from eva_runtime.training.align_config import RESUMABLE_CHANGES

    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
    files = {"base eva_hashes.json": Path(config.base) / "eva_hashes.json"}
    if config.closed_loop is not None:
        files["closed_loop states"] = Path(config.closed_loop.states)
    identity = {"format": RUN_FORMAT, "settings": settings}
    identity["sha256"] = {name: file_sha256(path) for name, path in files.items() if path.is_file()}
    # The bundle by what it deploys, not by when it was built: a bundle rebuilt from the same files may resume.
    identity["sha256"]["bundle content"] = bundle_content_sha256(Path(config.bundle))
    path = out / "run.json"
    if resume and (out / "last" / "state.json").is_file():
        if not path.is_file():
            raise ValueError(f"cannot resume {out}: it has no run.json (begun before runs recorded their settings)")
        _check_same(path, json.loads(path.read_text()), identity)
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(identity, indent=2))
    return identity


def _check_same(path: Path, before: dict, now: dict) -> None:
    if before.get("format") != RUN_FORMAT:
        raise ValueError(f"{path}: format {before.get('format')!r}, expected {RUN_FORMAT!r}")
    for group in ("settings", "sha256"):
        earlier, current = before.get(group, {}), now[group]
        for key in sorted(set(earlier) | set(current)):
            if earlier.get(key) != current.get(key):
                raise ValueError(
                    f"cannot resume {path.parent}: {key!r} is {current.get(key)!r}, the run used {earlier.get(key)!r}"
                )


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
    write_text_atomically(directory / "state.json", json.dumps(state, indent=2))  # last: the checkpoint's commit


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
