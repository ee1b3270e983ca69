"""Recorded episodes re-rendered through a world model's VAE: data for an IDM that reads what the model can draw.

The ladder shows the IDM failing on oracle frames after a VAE round trip (0/20) while a blur of equal PSNR keeps
the task: the IDM was trained on clean renders and the VAE's particular distortions (colour loss, deformed
edges) move its decoded actions by as much as a plan's motion. Training the IDM on the VAE's reconstructions of
the same demonstrations makes it read the learned model's frames, and the ladder's VAE rung measures whether that
closes the gap. The camera's video is resized to the VAE's frame size, cut into clips of `clip` frames (the world
model's clip, so frame positions see the same causal-cache depths as in a rollout; the last clip is padded with
its final frame), encoded and decoded with the latent mean, and written back as a new episode file; joints,
actions and metadata are copied unchanged.

Two hundred episodes take 35-45 minutes, so a stopped run continues: OUT/roundtrip.json names the VAE (by hash),
camera, clip and frame size, each episode file is written whole or not at all, and a rerun into the same OUT
skips the episodes already there; a rerun with another VAE or setting is refused rather than mixed in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

__all__ = ["roundtrip_episodes", "roundtrip_video"]


def roundtrip_video(vae, frames: np.ndarray, clip: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the VAE's reconstruction, clip by clip."""
    from eva_runtime.world_model.wan.latents import decode_latents, encode_frames

    out = []
    for start in range(0, len(frames), clip):
        part = frames[start : start + clip]
        padded = np.concatenate([part, np.repeat(part[-1:], clip - len(part), 0)]) if len(part) < clip else part
        out.append(decode_latents(vae, encode_frames(vae, padded[None]))[0][: len(part)])
    return np.concatenate(out)


def roundtrip_episodes(
    data: Path,
    model: Path,
    out: Path,
    camera: str = "cam_high",
    clip: int = 41,
    limit: int | None = None,
    log=print,
    image_size: tuple[int, int] = (64, 64),
) -> list[Path]:
    """`model`: a world-model pipeline directory (its VAE and frame size) or a verified VAE candidate file (then
    frames are resized to `image_size`)."""
    from eva_runtime.idm.windows import resize_video
    from eva_runtime.records.hdf5_episodes import list_episodes, read_episode, write_episode
    from eva_runtime.training.vae_candidates import load_verified_vae
    from eva_runtime.training.wm_run_files import initial_weights_sha256  # a file's hash, or a directory's pins

    vae = load_verified_vae(model)
    if model.is_dir():
        image_size = tuple(json.loads((model / "eva_world_model.json").read_text())["config"]["image_size"])
    size = image_size
    temporal = int(vae.config.scale_factor_temporal)
    if (clip - 1) % temporal:
        raise ValueError(f"clip must be 1 + k * {temporal}, got {clip}")
    _claim(out, {"vae_sha256": initial_weights_sha256(model), "camera": camera, "clip": clip, "image_size": list(size)})
    written = []
    for path in list_episodes(data)[:limit]:
        if (out / path.name).is_file():  # written whole by an earlier run of the same round trip
            written.append(out / path.name)
            log(f"{path.name}: already written")
            continue
        episode = read_episode(path)
        if camera not in episode.images:
            raise ValueError(f"{path}: no camera {camera!r}")
        frames = roundtrip_video(vae, resize_video(episode.images[camera], size), clip)
        rewritten = dataclasses.replace(episode, images={camera: frames})
        written.append(write_episode(out / path.name, rewritten))
        log(f"{path.name}: {len(frames)} frames through {model.name}'s VAE")
    return written


def _claim(out: Path, identity: dict) -> None:
    """Write OUT/roundtrip.json, or check that the one there describes this round trip."""
    from eva_runtime.atomic_file import write_text_atomically

    marker = out / "roundtrip.json"
    if marker.is_file():
        before = json.loads(marker.read_text())
        for key, value in identity.items():
            if before.get(key) != value:
                raise ValueError(
                    f"{out} holds a round trip with {key} {before.get(key)!r}, not {value!r}: "
                    "choose another --out or remove it"
                )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(marker, json.dumps(identity, indent=2))
