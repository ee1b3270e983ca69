"""Extra training clips for a transformer SFT run: a clip set (`dagger_labels.py`) mixed into every batch.

The demonstrations show the expert's states only; a DAgger clip set shows the states a learned model's own plans
led to, each followed by the expert's future from there. A run given one (`clips_sha256` and `clips_fraction` in
its identity) encodes its clips once, like the demonstrations' (`clip_latents.safetensors`, keyed by the VAE's
and the clip set's hashes), and draws `clips_fraction` of every batch from them, the rest from the
demonstrations, so a small clip set is neither drowned by 3,800 demonstration clips nor allowed to replace them.
The foreground loss weights are computed for the clips the same way (each clip's median is its still scene).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eva_runtime.atomic_file import replaced_atomically
from eva_runtime.training.dagger_labels import ClipSet
from eva_runtime.training.wm_loss_weights import clip_weights

__all__ = ["check_clip_set", "clip_latents", "training_batch"]


def check_clip_set(clips: ClipSet, run, cache) -> None:
    """Refuse a clip set that does not fit the run: its length, image size, fps or instruction."""
    clip = run.history_frames - 1 + run.horizon
    frame_shape = cache.videos[0].frames.shape[1:]
    if clips.frames.shape[1] != clip:
        raise ValueError(f"clip set: {clips.frames.shape[1]} frames per clip, the run's clips have {clip}")
    if clips.frames.shape[2:] != frame_shape:
        raise ValueError(f"clip set: frames {clips.frames.shape[2:]}, the cache's are {frame_shape}")
    if abs(clips.fps - cache.fps) > 1e-9:
        raise ValueError(f"clip set at {clips.fps} fps, the cache at {cache.fps}")
    if clips.instruction not in cache.instructions:
        raise ValueError(f"clip set instruction {clips.instruction!r} has no text embedding in the cache")


def clip_latents(out: Path, vae, clips: ClipSet, run, vae_sha: str, candidate, cache, device, log) -> dict:
    """The clip set's latents, text rows and (with a foreground weight) loss weights, encoded once; a clip set
    that does not fit the run is refused first (`check_clip_set`)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from eva_runtime.world_model.wan.latents import encode_frames

    check_clip_set(clips, run, cache)
    path = out / "clip_latents.safetensors"
    key = json.dumps({"vae": vae_sha, "clips": clips.sha256}, sort_keys=True)
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                log(f"clip latents reused from {path}")
                tensors = {k: v.float().to(device) for k, v in load_file(str(path)).items()}
                return _with_text(tensors, clips, cache, device)
    began = time.perf_counter()
    chunks = [encode_frames(vae, clips.frames[b : b + 32]).to(device) for b in range(0, len(clips), 32)]
    tensors = {"clip_latents": torch.cat(chunks).contiguous()}
    if run.foreground_weight > 0:
        clip = clips.frames.shape[1]
        pairs = [(i, 0) for i in range(len(clips))]
        factors = (candidate.spatial_factor, candidate.temporal_factor)
        weights = clip_weights(list(clips.frames), pairs, clip, *factors, run.foreground_weight)
        tensors["clip_weights"] = torch.from_numpy(weights).to(device)
    with replaced_atomically(path) as temporary:
        save_file({k: v.cpu().half() for k, v in tensors.items()}, str(temporary), metadata={"key": key})
    log(f"encoded {len(clips)} extra clips in {time.perf_counter() - began:.0f} s")
    tensors = {k: v.half().float() for k, v in tensors.items()}  # what a resumed run reads back
    return _with_text(tensors, clips, cache, device)


def _with_text(tensors: dict, clips: ClipSet, cache, device) -> dict:
    import torch

    row = cache.embed_index(clips.instruction)
    tensors["clip_text"] = torch.full((len(tensors["clip_latents"]),), row, dtype=torch.long, device=device)
    return tensors


def training_batch(data: dict, run, generator):
    """(latents, text rows, weights or None) of one batch: `clips_fraction` of it from the extra clips (when the
    run has them), the rest from the demonstrations, each drawn uniformly with the run's generator."""
    import torch

    latents, text = data["latents"], data["text"]
    extra = round(run.batch * run.clips_fraction) if "clip_latents" in data else 0
    rows = torch.randint(0, len(latents), (run.batch - extra,), generator=generator, device=latents.device)
    parts = [(latents[rows], text[rows], data["weights"][rows] if "weights" in data else None)]
    if extra:
        clip_rows = torch.randint(0, len(data["clip_latents"]), (extra,), generator=generator, device=latents.device)
        weights = data["clip_weights"][clip_rows] if "clip_weights" in data else None
        parts.append((data["clip_latents"][clip_rows], data["clip_text"][clip_rows], weights))
    batch_latents = torch.cat([p[0] for p in parts])
    batch_text = torch.cat([p[1] for p in parts])
    weights = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
    return batch_latents, batch_text, weights
