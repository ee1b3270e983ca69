"""VAE candidates for the tiny Wan world model: build, train on any device, measure, save, load.

The first tiny VAE (z 8, /4 spatial, /4 temporal, 950 CPU steps, plain L1) turned the red cube grey: the cube is
~5 of 4096 pixels, so a mean reconstruction loss hardly sees it. Two remedies are measured here rather than
assumed: capacity (latent channels, temporal compression) and a foreground-weighted loss (pixels that differ
from the episode's static background, i.e. arms and cube, weigh `foreground_weight` + 1 times more; the camera
is fixed, so the per-pixel median over an episode is the background). Training runs in two phases: short clips
(the image path and one temporal chunk), then clips as long as the world model's (later chunks read the causal
cache of the chunk before: a path short clips never exercise).

Weights are saved as safetensors with the candidate and the latent statistics in the metadata, and load strictly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eva_runtime.file_hash import file_sha256
from eva_runtime.training import wm_vae
from eva_runtime.training.wm_data import EpisodeVideo, clip_starts, to_model_range
from eva_runtime.world_model.fidelity import cube_fidelity

if TYPE_CHECKING:
    from eva_runtime.training.vae_run import VaeCheckpoint

__all__ = [
    "VaeCandidate",
    "VaeTraining",
    "background_frames",
    "build_candidate_vae",
    "latent_statistics",
    "load_candidate_vae",
    "load_verified_candidate",
    "load_verified_vae",
    "measure_vae",
    "save_candidate_vae",
    "train_candidate_vae",
]


@dataclass(frozen=True)
class VaeCandidate:
    name: str
    z_dim: int = 16
    base_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 2)
    res_blocks: int = 1
    temporal_downsample: tuple[bool, ...] = (True, True)
    foreground_weight: float = 9.0  # 0: plain L1
    # Extra weight on saturated pixels (max - min of RGB, 0..1): in these scenes only the small objects the task
    # is about are coloured (the arms, table and floor are grey), so colour is where the task's information is.
    saturation_weight: float = 0.0

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    def as_dict(self) -> dict:
        return asdict(self)

    def wan_config(self, **fields):
        """The `TinyWanConfig` with this candidate's VAE shape (other fields: defaults, or `fields`)."""
        from eva_runtime.world_model.wan.components import TinyWanConfig

        return TinyWanConfig(
            vae_base_dim=self.base_dim,
            vae_dim_mult=self.dim_mult,
            vae_z_dim=self.z_dim,
            vae_res_blocks=self.res_blocks,
            vae_temporal_downsample=self.temporal_downsample,
            **fields,
        )

    @classmethod
    def from_dict(cls, values: dict) -> VaeCandidate:
        values = dict(values)
        values["dim_mult"] = tuple(values["dim_mult"])
        values["temporal_downsample"] = tuple(values["temporal_downsample"])
        return cls(**values)


@dataclass(frozen=True)
class VaeTraining:
    short_clip: int = 9  # 1 + 2 temporal chunks of 4
    long_clip: int = 41  # the world model's clip: 5 history + 37 horizon - 1
    short_batch: int = 32
    long_batch: int = 16
    short_share: float = 0.4  # of the steps
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 0
    extra: dict = field(default_factory=dict)


def build_candidate_vae(candidate: VaeCandidate, latents_mean=None, latents_std=None):
    from eva_runtime.world_model.wan.components import build_vae

    return build_vae(candidate.wan_config(), latents_mean, latents_std)


def background_frames(videos: list[EpisodeVideo]) -> list[np.ndarray]:
    """The static background of each episode: the per-pixel median over its frames."""
    return [np.median(v.frames, axis=0).astype(np.uint8) for v in videos]


def _clip_batch(videos, backgrounds, pairs, rng, size, clip, device):
    import torch

    chosen = pairs[rng.integers(0, len(pairs), size)]
    frames = np.stack([videos[e].frames[s : s + clip] for e, s in chosen])
    difference = np.abs(frames.astype(np.int16) - np.stack([backgrounds[e] for e, _ in chosen])[:, None]).mean(-1)
    foreground = torch.from_numpy(np.minimum(difference / 24.0, 1.0).astype(np.float32))
    saturation = torch.from_numpy(((frames.max(-1).astype(np.float32) - frames.min(-1)) / 255.0).astype(np.float32))
    # (B, 3, T, H, W) video and two (B, 1, T, H, W) maps
    return to_model_range(frames).to(device), foreground[:, None].to(device), saturation[:, None].to(device)


def train_candidate_vae(
    vae,
    candidate: VaeCandidate,
    videos: list[EpisodeVideo],
    steps: int,
    settings: VaeTraining,
    device,
    log=print,
    checkpoint: VaeCheckpoint | None = None,
) -> list[float]:
    """Train in place for `steps` (short clips first, then long ones); returns the loss per step. `checkpoint`:
    continue from its file when there is one, and save every `checkpoint.every` steps and at the end."""
    import torch

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    backgrounds = background_frames(videos)
    lengths = [len(v.frames) for v in videos]
    pairs = {True: clip_starts(lengths, settings.short_clip), False: clip_starts(lengths, settings.long_clip)}
    vae.to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    first, losses = (0, []) if checkpoint is None else checkpoint.load(vae, optimizer, rng)
    warmup, short_steps = max(1, steps // 20), round(steps * settings.short_share)
    began = time.perf_counter()
    for step in range(first, steps):
        factor = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * factor
        short = step < short_steps
        batch = (settings.short_batch, settings.short_clip) if short else (settings.long_batch, settings.long_clip)
        clips = _clip_batch(videos, backgrounds, pairs[short], rng, *batch, device)
        losses.append(_vae_step(vae, candidate, optimizer, clips, settings.kl_weight))
        if step % 100 == 0 or step == steps - 1:
            seconds = time.perf_counter() - began
            log(f"  vae {candidate.name} step {step}/{steps} loss {losses[-1]:.4f} ({seconds:.0f} s)")
        if checkpoint is not None and ((step + 1) % checkpoint.every == 0 or step + 1 == steps):
            checkpoint.save(vae, optimizer, rng, step + 1, losses)
    vae.eval()
    return losses


def _vae_step(vae, candidate: VaeCandidate, optimizer, clips, kl_weight: float) -> float:
    """One optimizer step of the weighted L1 reconstruction loss (+ a small KL term); returns the loss."""
    import torch

    video, foreground, saturation = clips
    posterior = vae.encode(video).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    weight = 1.0 + candidate.foreground_weight * foreground + candidate.saturation_weight * saturation
    loss = ((reconstruction - video).abs() * weight).mean() / weight.mean()
    loss = loss + kl_weight * posterior.kl().mean() / video[0].numel()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def latent_statistics(
    vae, videos: list[EpisodeVideo], clip: int, device, samples: int = 64, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the latent means over random clips (the pipeline's normalisation).

    :func:`eva_runtime.training.wm_vae.latent_statistics`, 16 clips per encode as the candidates were measured.
    """
    return wm_vae.latent_statistics(vae, videos, clip, samples, seed, device=device, batch=16)


def measure_vae(vae, videos: list[EpisodeVideo], clip: int, device, starts=(0, 20, 40, 59)) -> dict:
    """Encode -> decode held-out clips: frame PSNR (all, first, last frame) and the cube's fidelity."""
    import torch

    truths, recons = [], []
    with torch.no_grad():
        for video in videos:
            for start in starts:
                if start + clip > len(video.frames):
                    continue
                frames = video.frames[start : start + clip]
                posterior = vae.encode(to_model_range(frames[None]).to(device)).latent_dist
                truths.append(frames)
                recons.append(wm_vae.to_uint8(vae.decode(posterior.mode()).sample[0]))
    truth, recon = np.stack(truths), np.stack(recons)
    fidelity = cube_fidelity(truth, recon).as_dict()
    per_frame = [cube_fidelity(truth[:, i], recon[:, i]) for i in range(truth.shape[1])]
    return {
        **fidelity,
        "first_frame_psnr_db": per_frame[0].frame_psnr_db,
        "last_frame_psnr_db": per_frame[-1].frame_psnr_db,
        # Depth in the causal VAE: frames of later chunks read the cache of the earlier ones (NaN: no cube there).
        "cube_visible_by_frame": [round(f.cube_visible, 4) for f in per_frame],
        "clips": len(truth),
    }


def save_candidate_vae(vae, candidate: VaeCandidate, path: Path | str, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in vae.state_dict().items()}
    metadata = {
        "candidate": json.dumps(candidate.as_dict()),
        "latents_mean": json.dumps(list(vae.config.latents_mean)),
        "latents_std": json.dumps(list(vae.config.latents_std)),
        "extra": json.dumps(extra or {}),
    }
    save_file(state, str(path), metadata=metadata)
    Path(str(path) + ".sha256").write_text(file_sha256(path) + "\n")
    return path


def load_verified_vae(source: Path | str):
    """The VAE the runtime reads frames through: a hash-verified Wan pipeline directory's `vae/`, or a candidate
    file whose `<file>.sha256` sidecar matches (refused otherwise, before anything is built from it)."""
    import torch

    source = Path(source)
    if source.is_dir():
        from diffusers import AutoencoderKLWan

        from eva_runtime.world_model.wan.model_files import verify_hashes

        verify_hashes(source)
        return AutoencoderKLWan.from_pretrained(str(source / "vae"), torch_dtype=torch.float32).eval()
    return load_verified_candidate(source)[0]


def load_verified_candidate(path: Path | str):
    """(vae, candidate, extra) from a candidate file whose `<file>.sha256` sidecar matches; refused otherwise."""
    path = Path(path)
    sidecar = Path(str(path) + ".sha256")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such VAE file or pipeline directory")
    if not sidecar.is_file():
        raise ValueError(f"{path}: missing {sidecar.name}; refusing an unverified VAE")
    if sidecar.read_text().strip() != file_sha256(path):
        raise ValueError(f"{path}: SHA-256 does not match {sidecar.name}")
    return load_candidate_vae(path)


def load_candidate_vae(path: Path | str):
    """(vae, candidate, extra) from a saved candidate; strict: every tensor must match the rebuilt network."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "candidate" not in metadata:
        raise ValueError(f"{path}: not a VAE candidate file (no 'candidate' metadata)")
    candidate = VaeCandidate.from_dict(json.loads(metadata["candidate"]))
    vae = build_candidate_vae(candidate, json.loads(metadata["latents_mean"]), json.loads(metadata["latents_std"]))
    vae.load_state_dict(load_file(str(path)), strict=True)
    return vae.eval(), candidate, json.loads(metadata.get("extra", "{}"))
