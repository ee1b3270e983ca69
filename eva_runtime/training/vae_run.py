"""One VAE training run (`eva train world-model-vae`) from a video cache to a measured candidate file, resumable.

A band-frame VAE fine-tune takes an hour on two cores; a run that dies at minute 50 should lose minutes, not the
hour. The run keeps its state beside its output (`OUT.state.safetensors` + `.sha256`: weights, optimizer slots,
both random-number states, the step and the losses so far) every `checkpoint_every` steps, and `--resume`
continues it to the same weights an uninterrupted run reaches. A resumption must be the same run: the cache, the
candidate, the warm start and every setting are kept in the state and compared, and a difference is refused by
name. The warm start (`--init`) is loaded only when its `.sha256` sidecar matches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eva_runtime.file_hash import file_sha256
from eva_runtime.training.train_state import load_train_state, save_train_state
from eva_runtime.training.vae_candidates import VaeTraining

__all__ = ["FORMAT", "VaeCheckpoint", "VaeRun", "state_path", "train_vae_run"]

FORMAT = "eva-runtime/vae-run-v1"


def state_path(out: Path) -> Path:
    return out.with_name(out.stem + ".state.safetensors")


@dataclass(frozen=True)
class VaeCheckpoint:
    """Where a run's state goes, how often, and the identity a resumption must share."""

    path: Path
    every: int
    identity: dict

    def load(self, vae, optimizer, rng) -> tuple[int, list[float]]:
        """(first step, losses so far): (0, []) when there is no state yet; else the weights, optimizer and random
        states restored in place, once the saved identity is this run's."""
        import torch

        if not self.path.is_file():
            return 0, []
        tensors, metadata = load_train_state(self.path, FORMAT, {"vae": vae}, optimizer, self._same_run)
        torch.set_rng_state(tensors["rng.torch"])
        rng.bit_generator.state = json.loads(metadata["numpy_rng"])
        return int(metadata["step"]), json.loads(metadata["losses"])

    def _same_run(self, metadata: dict[str, str]) -> None:
        """Refuse, naming the first differing key, a state another run saved (before any tensor is loaded)."""
        saved = json.loads(metadata["identity"])
        for key in sorted(set(saved) | set(self.identity)):
            if saved.get(key) != self.identity.get(key):
                raise ValueError(
                    f"cannot resume {self.path}: {key!r} is {self.identity.get(key)!r}, the run used {saved.get(key)!r}"
                )

    def save(self, vae, optimizer, rng, step: int, losses: list[float]) -> None:
        import torch

        metadata = {
            "identity": json.dumps(self.identity),
            "step": str(step),
            "losses": json.dumps(losses),
            "numpy_rng": json.dumps(rng.bit_generator.state),
        }
        save_train_state(self.path, FORMAT, {"vae": vae}, optimizer, {"rng.torch": torch.get_rng_state()}, metadata)


@dataclass(frozen=True)
class VaeRun:
    cache: Path
    candidate: str
    out: Path
    steps: int
    settings: VaeTraining
    init: Path | None = None
    held_out: int = 10
    checkpoint_every: int = 100


def train_vae_run(run: VaeRun, resume: bool = False, log=print) -> dict:
    """Train (or continue) the run, measure the result on the held-out episodes, save OUT (+ .sha256, + .json);
    the state file is removed once OUT is written. Returns the measurement."""
    import torch

    from eva_runtime.training.vae_candidates import (
        build_candidate_vae,
        latent_statistics,
        measure_vae,
        save_candidate_vae,
        train_candidate_vae,
    )
    from eva_runtime.training.video_cache import load_video_cache
    from eva_runtime.training.wm_recipe import CANDIDATES

    if run.candidate not in CANDIDATES:
        raise ValueError(f"candidate {run.candidate!r} is unknown (known: {', '.join(sorted(CANDIDATES))})")
    spec = CANDIDATES[run.candidate]
    if state_path(run.out).is_file() and not resume:
        raise ValueError(f"{state_path(run.out)} holds an unfinished run: pass --resume to continue it, or remove it")
    loaded = load_video_cache(run.cache)
    checkpoint = VaeCheckpoint(state_path(run.out), run.checkpoint_every, _identity(run, spec, loaded.sha256))
    train, held = loaded.videos[: -run.held_out], loaded.videos[-run.held_out :]
    torch.manual_seed(0)
    vae = build_candidate_vae(spec)
    if run.init is not None:
        vae.load_state_dict(_warm_start(run.init, spec).state_dict(), strict=True)
    device = torch.device("cpu")
    losses = train_candidate_vae(vae, spec, train, run.steps, run.settings, device, log, checkpoint)
    mean, std = latent_statistics(vae, train, run.settings.long_clip, device)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    measured = measure_vae(vae, held, run.settings.long_clip, device)
    result = {
        **measured,
        "steps": run.steps,
        "init": str(run.init) if run.init else None,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
    }
    save_candidate_vae(vae, spec, run.out, {"measured": result})
    run.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    checkpoint.path.unlink()
    Path(str(checkpoint.path) + ".sha256").unlink(missing_ok=True)
    return result


def _identity(run: VaeRun, spec, cache_sha256: str) -> dict:
    """What a resumption must share (JSON values, compared key by key)."""
    return json.loads(
        json.dumps(
            {
                "cache_sha256": cache_sha256,  # hashed once, as the cache loads
                "candidate": spec.as_dict(),
                "steps": run.steps,
                "settings": asdict(run.settings),
                "init_sha256": None if run.init is None else file_sha256(run.init),
                "held_out": run.held_out,
            }
        )
    )


def _warm_start(init: Path, spec):
    """The warm start's network, hash-verified and of the candidate's architecture (refused otherwise)."""
    from eva_runtime.training.vae_candidates import load_verified_candidate

    start, start_spec, _ = load_verified_candidate(init)
    shape = ("z_dim", "base_dim", "dim_mult", "res_blocks", "temporal_downsample")
    different = [key for key in shape if getattr(start_spec, key) != getattr(spec, key)]
    if different:
        raise ValueError(f"{init} has another architecture than {spec.name} ({', '.join(different)} differ)")
    return start
