"""A long, resumable SFT run of the tiny Wan transformer on a video cache and a trained VAE candidate.

The recipe (`wm_recipe.py`) fits a time budget in one sitting; this is the run that goes on for hours in the
background on the two CPU cores and survives being stopped. Everything it needs to continue exactly is on disk:

- `run.json`: the settings, the cache's and the VAE file's SHA-256. A resumed run must be started with the same
  settings on the same files; otherwise it refuses and names the first field that differs.
- `latents.safetensors`: every training and held-out clip encoded once by the VAE (the VAE, not the
  transformer, is the cost of encoding on CPU), keyed by the VAE's hash.
- `last/state.safetensors` (+ `.sha256`): weights, EMA weights, optimizer slots, the batch generator's state and
  the step, written every `checkpoint_every` steps through a temporary file, so a kill leaves the previous one.
- `progress.jsonl`: one line per checkpoint (step, training loss, held-out loss of the EMA weights, seconds);
  `samples_<step>.gif`: held-out rollouts next to the truth every `samples_every` steps, with their cube fidelity.
- `transformer.safetensors` (EMA weights) and `recipe.json` in the recipe's layout, plus the VAE copied as
  `vae_<name>.safetensors`, so `eva train world-model-assemble --recipe OUT` turns the run into a pipeline.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eva_runtime.atomic_file import replaced_atomically
from eva_runtime.file_hash import file_sha256
from eva_runtime.training.dagger_labels import load_clip_set
from eva_runtime.training.video_cache import VideoCache, load_video_cache
from eva_runtime.training.wm_extra_clips import clip_latents, training_batch
from eva_runtime.training.wm_loss_weights import training_weights
from eva_runtime.training.wm_run_files import (
    FORMAT,
    check_resume,
    initial_weights_sha256,
    load_initial_weights,
    load_state,
    save_state,
    write_json,
)
from eva_runtime.training.wm_run_samples import held_out_loss, padded_clips, sample_rollouts

__all__ = [
    "SftTraining",
    "TransformerRun",
    "TransformerShape",
    "encode_padded_clips",
    "save_transformer",
    "sft_step",
    "train_transformer_run",
    "transformer_config",
]


@dataclass(frozen=True)
class TransformerShape:
    layers: int = 6
    heads: int = 4
    head_dim: int = 32
    ffn_dim: int = 512
    freq_dim: int = 64


@dataclass(frozen=True)
class TransformerRun:
    steps: int = 20000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 300
    ema_decay: float = 0.999
    history_frames: int = 5
    horizon: int = 37
    end_padding: int = 16  # frames of the resting final pose appended: rollouts asked for near the end
    clip_stride: int = 2
    held_out: int = 10
    seed: int = 0
    transformer: TransformerShape = TransformerShape()
    foreground_weight: float = 0.0  # extra loss weight of latent cells with the cube or a moving arm (0: plain MSE)
    init_sha256: str = ""  # weights the run started from (a saved transformer), "" for a fresh initialisation
    clips_sha256: str = ""  # an extra clip set mixed into every batch (wm_extra_clips.py), "" for none
    clips_fraction: float = 0.0  # the share of each batch drawn from it
    device: str = "cpu"  # "cuda" on a GPU machine; the generator state is per device, so a resume keeps it
    # Bookkeeping only: may change between a run and its resumption.
    checkpoint_every: int = 200
    samples_every: int = 2000
    sample_steps: int = 10

    BOOKKEEPING = ("checkpoint_every", "samples_every", "sample_steps")

    def identity(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        values = dataclasses.asdict(self)
        for key in self.BOOKKEEPING:
            values.pop(key)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TransformerRun:
        values = dict(values)
        values["transformer"] = TransformerShape(**values.get("transformer", {}))
        return cls(**values)


def encode_padded_clips(vae, videos, history_frames: int, horizon: int, end_padding: int, stride: int, device):
    """Normalised latents of every padded clip, (N, z, t, h, w), and the episode index of each clip."""
    import torch

    from eva_runtime.world_model.wan.latents import encode_frames

    clip = history_frames - 1 + horizon
    padded, pairs = padded_clips(videos, history_frames, end_padding, clip, stride)
    chunks = []
    for begin in range(0, len(pairs), 32):
        chosen = pairs[begin : begin + 32]
        chunks.append(encode_frames(vae, np.stack([padded[e][s : s + clip] for e, s in chosen])).to(device))
    return torch.cat(chunks), np.asarray([e for e, _ in pairs])


def transformer_config(candidate, shape: TransformerShape, cache: VideoCache):
    """The `TinyWanConfig` of a model on `candidate`'s VAE (the vocabulary is filled in at assembly)."""
    height, width = cache.videos[0].frames.shape[1:3]
    return candidate.wan_config(
        image_size=(height, width),
        heads=shape.heads,
        head_dim=shape.head_dim,
        layers=shape.layers,
        ffn_dim=shape.ffn_dim,
        freq_dim=shape.freq_dim,
        text_dim=int(cache.text_embeds.shape[-1]),
    )


def load_or_encode_latents(out: Path, vae, cache: VideoCache, run: TransformerRun, vae_sha: str, device, log):
    """Training and held-out latents, encoded once per VAE and reused on resumption."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = out / "latents.safetensors"
    key = json.dumps(
        {
            "vae": vae_sha,
            "cache": cache.sha256,
            **{k: getattr(run, k) for k in ("history_frames", "horizon", "end_padding", "clip_stride", "held_out")},
        },
        sort_keys=True,
    )
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                tensors = load_file(str(path))
                log(f"latents reused from {path}")
                return {k: (v.float() if v.is_floating_point() else v).to(device) for k, v in tensors.items()}
    began = time.perf_counter()
    train, held = cache.videos[: -run.held_out], cache.videos[-run.held_out :]
    index = {text: i for i, text in enumerate(cache.instructions)}
    shape = (run.history_frames, run.horizon, run.end_padding)
    latents, episodes = encode_padded_clips(vae, train, *shape, run.clip_stride, device)
    held_latents, held_episodes = encode_padded_clips(vae, held, *shape, 8, device)
    tensors = {
        "latents": latents.contiguous(),
        "text": torch.tensor([index[train[e].instruction] for e in episodes]),
        "held_latents": held_latents.contiguous(),
        "held_text": torch.tensor([index[held[e].instruction] for e in held_episodes]),
    }
    # float16 on disk halves a file of ~1 GB per 100 episodes; training reads it back as float32.
    on_disk = {k: v.cpu().half() if v.is_floating_point() else v.cpu() for k, v in tensors.items()}
    with replaced_atomically(path) as temporary:
        save_file(on_disk, str(temporary), metadata={"key": key})
    log(f"encoded {len(latents)} training clips in {time.perf_counter() - began:.0f} s")
    return {k: (v.half().float() if v.is_floating_point() else v).to(device) for k, v in tensors.items()}


def save_transformer(model, config, path: Path, extra: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(config.as_dict()), "extra": json.dumps(extra)}
    with replaced_atomically(path) as temporary:
        save_file(state, str(temporary), metadata=metadata)


@dataclass
class SftTraining:
    """What a training session works with: this run's sessions (rebuilt on resumption from the files and the
    checkpoint) and the recipe's time-budgeted SFT share it and `sft_step`."""

    run: TransformerRun
    out: Path
    cache: VideoCache
    vae: object
    config: object
    data: dict
    embeds: object
    conditioned: int
    model: object
    ema: object
    optimizer: object
    generator: object
    report: dict
    step: int = 0
    curve: list = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return self.out / "last" / "state.safetensors"


def train_transformer_run(
    cache_path: Path,
    vae_path: Path,
    out: Path,
    run: TransformerRun,
    resume: bool = False,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    init: Path | None = None,
    clips: Path | None = None,
) -> dict:
    """Train (or continue) into `out`; returns the recipe-layout report. `stop_after` ends this call after that
    many steps (a test's stand-in for a killed job: the checkpoint is whatever was last saved). `init`: start
    from a saved transformer of the same shape (an earlier run's `transformer.safetensors`, hash-checked against
    its `.sha256` sidecar when there is one, or an assembled world-model directory, checked against its
    eva_hashes.json) with a fresh optimizer: a warm start, part of the run's identity.
    `clips`: a clip set (`dagger_labels.py`) that `run.clips_fraction` of every batch comes from."""
    if init is not None:
        run = dataclasses.replace(run, init_sha256=initial_weights_sha256(Path(init)))
    if (clips is None) != (run.clips_fraction == 0):
        raise ValueError("a clip set needs clips_fraction in (0, 1), and clips_fraction needs a clip set")
    if clips is not None:
        run = dataclasses.replace(run, clips_sha256=file_sha256(Path(clips)))
    training = _prepare(cache_path, Path(vae_path), out, run, resume, log, init, clips)
    running: list[float] = []
    began, done_here = time.perf_counter(), 0
    while training.step < run.steps and (stop_after is None or done_here < stop_after):
        running.append(sft_step(training))
        done_here += 1
        if training.step % run.checkpoint_every == 0 or training.step == run.steps:
            _checkpoint(training, float(np.mean(running)), time.perf_counter() - began, log)
            running = []
    return training.report


def _prepare(
    cache_path: Path, vae_path: Path, out: Path, run: TransformerRun, resume: bool, log, init=None, clips=None
) -> SftTraining:
    """Check the inputs and the run directory, encode (or reuse) the latents, build or restore the model."""
    import torch

    from eva_runtime.training.vae_candidates import load_candidate_vae
    from eva_runtime.world_model.wan.components import build_transformer

    cache = load_video_cache(cache_path)
    if len(cache.videos) <= run.held_out:
        raise ValueError(f"{cache_path}: {len(cache.videos)} episodes, need more than {run.held_out}")
    vae_sha = file_sha256(vae_path)
    vae, candidate, vae_extra = load_candidate_vae(vae_path)
    temporal = candidate.temporal_factor
    if (run.history_frames - 1) % temporal or (run.horizon - 1) % temporal:
        raise ValueError(f"history_frames - 1 and horizon - 1 must be multiples of the VAE's time factor {temporal}")
    _claim_directory(out, run, cache.sha256, vae_sha, vae_path, resume)
    device = torch.device(run.device)
    vae = _encoding_vae(vae, device)
    data = load_or_encode_latents(out, vae, cache, run, vae_sha, device, log)
    if clips is not None:
        data.update(clip_latents(out, vae, load_clip_set(clips), run, vae_sha, candidate, cache, device, log))
    if run.foreground_weight > 0:
        data["weights"] = torch.from_numpy(training_weights(cache.videos[: -run.held_out], run, candidate)).to(device)
        if data["weights"].shape[0] != data["latents"].shape[0]:  # the same clips, cut the same way
            raise ValueError(f"{len(data['weights'])} loss-weight clips for {len(data['latents'])} latent clips")
        log(f"loss weights: {float((data['weights'] > 1).float().mean()):.1%} of latent cells are foreground")
    config = transformer_config(candidate, run.transformer, cache)
    model = build_transformer(config, seed=run.seed).to(device).train()
    if init is not None:
        load_initial_weights(model, config, Path(init), run.init_sha256)
        log(f"initialised from {init}")
    training = SftTraining(
        run=run,
        out=out,
        cache=cache,
        vae=vae,
        config=config,
        data=data,
        embeds=torch.from_numpy(cache.text_embeds).to(device),
        conditioned=(run.history_frames - 1) // temporal + 1,
        model=model,
        ema=copy.deepcopy(model).eval().requires_grad_(False),
        optimizer=torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.0),
        generator=torch.Generator(device=device).manual_seed(run.seed),
        report=_report(cache, run, candidate, vae_extra, vae_sha, vae_path, config, len(data["latents"])),
    )
    if resume and training.state_path.is_file():
        training.step, training.curve = load_state(
            training.state_path, training.model, training.ema, training.optimizer, training.generator
        )
        log(f"resumed at step {training.step}/{run.steps}")
    training.report["sft"]["curve"] = training.curve
    if not (out / f"vae_{candidate.name}.safetensors").is_file():
        shutil.copyfile(vae_path, out / f"vae_{candidate.name}.safetensors")
    return training


def _encoding_vae(vae, device):
    """The VAE where the training runs. It encodes every clip once and decodes the samples, both without
    gradients, so on the CPU it gets the serving kernels (`cpu_fast_paths.py`: the same frames, faster)."""
    from eva_runtime.world_model.wan.cpu_fast_paths import install_cpu_fast_paths

    vae = vae.to(device)
    if device.type == "cpu":
        install_cpu_fast_paths(vae)
    return vae


def _claim_directory(out: Path, run: TransformerRun, cache_sha: str, vae_sha: str, vae_path: Path, resume: bool):
    """A fresh directory, or the same run resumed: anything else is refused before it is touched."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / "run.json").is_file():
        check_resume(out, run, cache_sha, vae_sha)
    elif (out / "run.json").is_file() and (out / "last" / "state.safetensors").is_file():
        raise ValueError(f"{out} holds a run already; pass resume to continue it or choose another directory")
    description = {"format": FORMAT, "settings": run.identity(), "cache_sha256": cache_sha, "vae_sha256": vae_sha}
    write_json(out / "run.json", {**description, "vae_file": str(vae_path), "torch": torch.__version__})


def _report(cache, run, candidate, vae_extra, vae_sha, vae_path, config, clips: int) -> dict:
    """The recipe-layout report `world-model-assemble` reads."""
    import torch

    name = candidate.name
    return {
        "cache_sha256": cache.sha256,
        "episodes": len(cache.videos),
        "held_out_episodes": [v.name for v in cache.videos[-run.held_out :]],
        "device": run.device,
        "torch": torch.__version__,
        "settings": dataclasses.asdict(run),
        "vae": {name: {**vae_extra.get("measured", {}), "sha256": vae_sha, "candidate": candidate.as_dict()}},
        "selection": {"chosen": name, "reason": f"given: {vae_path}"},
        "sft": {"config": config.as_dict(), "steps": run.steps, "clips": clips, "curve": []},
    }


def sft_step(t: SftTraining) -> float:
    """One optimizer step (cosine schedule with warm-up) and the EMA update; returns the loss."""
    import torch

    from eva_runtime.training.wm_sft import flow_matching_loss

    run, step = t.run, t.step
    factor = min(1.0, (step + 1) / run.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / run.steps)))
    for group in t.optimizer.param_groups:
        group["lr"] = run.lr * factor
    latents, text, weights = training_batch(t.data, run, t.generator)
    shift = t.config.flow_shift
    loss = flow_matching_loss(t.model, latents, t.embeds[text], t.conditioned, t.generator, shift, weights)
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(t.model.parameters(), 1.0)
    t.optimizer.step()
    with torch.no_grad():
        decay = min(run.ema_decay, (1 + step) / (10 + step))
        for target, source in zip(t.ema.parameters(), t.model.parameters(), strict=True):
            target.lerp_(source, 1 - decay)
    t.step += 1
    return float(loss.detach())


def _checkpoint(t: SftTraining, loss: float, seconds: float, log) -> None:
    """Held-out loss (and samples when due), then progress line, EMA weights, state and report, in that order:
    a kill between two writes leaves a checkpoint that is at most one interval old, never a torn one."""
    run, step = t.run, t.step
    finished = step == run.steps
    held_text = t.embeds[t.data["held_text"]]
    latents = t.data["held_latents"]
    held_loss = held_out_loss(t.ema, latents, held_text, t.conditioned, t.config.flow_shift, latents.device)
    point = {"step": step, "loss": loss, "held_out_loss_ema": held_loss, "seconds_this_session": round(seconds, 1)}
    if step % run.samples_every == 0 or finished:
        point["samples"] = sample_rollouts(
            t.ema, t.vae, t.cache.videos[-run.held_out :], t.cache, t.config, run.history_frames, run.horizon,
            run.end_padding, run.sample_steps, t.out / f"samples_{step:06d}.gif",
        )  # fmt: skip
    t.curve.append(point)
    with open(t.out / "progress.jsonl", "a") as handle:
        handle.write(json.dumps(point) + "\n")
    save_transformer(t.ema, t.config, t.out / "transformer.safetensors", {"step": step, "of": run.steps})
    save_state(t.state_path, t.model, t.ema, t.optimizer, t.generator, step, t.curve)
    t.report["sft"].update(curve=t.curve, saved_step=step)
    write_json(t.out / "recipe.json", t.report)
    log(f"step {step}/{run.steps} loss {loss:.4f} held-out (EMA) {held_loss:.4f}")
