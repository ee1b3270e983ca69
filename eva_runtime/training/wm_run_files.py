"""What a long transformer SFT run keeps on disk, and how it is checked: the settings a resumption must share
(`run.json`), the hash-verified training state (`last/state.safetensors` + `.sha256`: weights, EMA weights,
optimizer slots, generator state, step and curve), each written through a temporary file, and the warm start's
weights (hash- and shape-checked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from eva_runtime.atomic_file import write_text_atomically
from eva_runtime.file_hash import file_sha256
from eva_runtime.training.train_state import load_train_state, save_train_state

if TYPE_CHECKING:
    from eva_runtime.training.wm_transformer_run import TransformerRun

__all__ = [
    "FORMAT",
    "check_resume",
    "file_sha256",
    "initial_weights_sha256",
    "load_initial_weights",
    "load_state",
    "save_state",
    "write_json",
]

FORMAT = "eva-runtime/wm-transformer-run-v1"


def check_resume(out: Path, run: TransformerRun, cache_sha: str, vae_sha: str) -> None:
    saved = json.loads((out / "run.json").read_text())
    if saved.get("format") != FORMAT:
        raise ValueError(f"{out / 'run.json'}: format {saved.get('format')!r}, expected {FORMAT!r}")
    for key, expected in (("cache_sha256", cache_sha), ("vae_sha256", vae_sha)):
        if saved[key] != expected:
            raise ValueError(f"cannot resume {out}: {key} is {expected[:12]}..., the run used {saved[key][:12]}...")
    before, now = saved["settings"], run.identity()
    defaults = type(run)().identity()  # a field added since the run began takes its default there
    for key in now:
        if before.get(key, json.loads(json.dumps(defaults[key]))) != json.loads(json.dumps(now[key])):
            raise ValueError(f"cannot resume {out}: setting {key!r} is {now[key]!r}, the run used {before.get(key)!r}")


def save_state(path: Path, model, ema, optimizer, generator, step: int, curve: list[dict]) -> None:
    save_train_state(
        path,
        FORMAT,
        {"model": model, "ema": ema},
        optimizer,
        {"rng.generator": generator.get_state()},
        {"step": str(step), "curve": json.dumps(curve)},
    )


def load_state(path: Path, model, ema, optimizer, generator) -> tuple[int, list[dict]]:
    tensors, metadata = load_train_state(path, FORMAT, {"model": model, "ema": ema}, optimizer)
    generator.set_state(tensors["rng.generator"])
    return int(metadata["step"]), json.loads(metadata["curve"])


def write_json(path: Path, value: dict) -> None:
    write_text_atomically(path, json.dumps(value, indent=2, default=str))


def initial_weights_sha256(init: Path) -> str:
    """What identifies a warm start: a saved transformer's file hash, or an assembled world model's eva_hashes.json
    hash (which pins every file under it)."""
    return file_sha256(init / "eva_hashes.json") if init.is_dir() else file_sha256(init)


def load_initial_weights(model, config, init: Path, expected_sha: str) -> None:
    """Load a saved transformer, or the transformer of an assembled (hash-verified) world-model directory, into
    `model`; refused when a hash or the architecture differs."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if init.is_dir():
        from eva_runtime.world_model.wan.model_files import verify_hashes

        verify_hashes(init)
        if initial_weights_sha256(init) != expected_sha:  # changed since the run's identity was taken
            raise ValueError(f"{init}: eva_hashes.json is not the one this run started from; refusing it")
        saved = json.loads((init / "eva_world_model.json").read_text()).get("config", {})
        weights = init / "transformer" / "diffusion_pytorch_model.safetensors"
    else:
        sidecar = Path(str(init) + ".sha256")
        if sidecar.is_file() and sidecar.read_text().split()[0] != expected_sha:
            raise ValueError(f"{init}: SHA-256 does not match {sidecar.name}; refusing a corrupted initialisation")
        with safe_open(str(init), framework="pt") as handle:
            saved = json.loads((handle.metadata() or {}).get("config", "{}"))
        weights = init
    wanted = json.loads(json.dumps(config.as_dict()))
    differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k) and k != "vocabulary")
    if differing:
        raise ValueError(f"{init}: a transformer of another shape ({', '.join(differing)} differ)")
    model.load_state_dict(load_file(str(weights)), strict=True)
