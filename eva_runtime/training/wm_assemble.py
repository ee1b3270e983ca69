"""Before and after the world-model recipe: make its video cache, and assemble its outputs into a pipeline.

- `make_video_cache`: recorded episodes -> one camera's video at the model's fps and size, plus the fixed text
  embeddings of every instruction, computed by the same tiny tokenizer and text encoder the assembled pipeline
  will have (seeded, built from the vocabulary stored in the cache).
- `assemble_world_model`: the recipe's chosen VAE and trained transformer + that tokenizer and text encoder ->
  a diffusers `WanImageToVideoPipeline` directory with `eva_world_model.json` and `eva_hashes.json`, refused if
  the rebuilt text encoder does not reproduce the embeddings the transformer was trained with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["assemble_world_model", "make_video_cache"]

MAX_SEQUENCE_LENGTH = 32  # the backend's default prompt length for the tiny model


def _text_embeds(config, instructions: Sequence[str]) -> np.ndarray:
    import torch

    from eva_runtime.world_model.wan.components import build_pipeline

    pipeline = build_pipeline(config, seed=0)
    with torch.no_grad():
        rows = [
            pipeline.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH)[0][
                0
            ]
            for text in instructions
        ]
    return torch.stack(rows).float().numpy()


def make_video_cache(
    data: Sequence[Path], out: Path, camera: str = "cam_high", fps: float = 12.5, image_size: tuple[int, int] = (64, 64)
) -> dict:
    from eva_runtime.sim.tasks import TASKS
    from eva_runtime.training.video_cache import save_video_cache
    from eva_runtime.training.wm_data import load_videos
    from eva_runtime.world_model.wan.components import TinyWanConfig, instruction_vocabulary

    videos = [v for directory in data for v in load_videos(directory, camera, fps, image_size)]
    instructions = tuple(sorted({spec.instruction for spec in TASKS.values()} | {v.instruction for v in videos}))
    vocabulary = instruction_vocabulary(instructions)
    config = TinyWanConfig(image_size=image_size, vocabulary=vocabulary)
    embeds = _text_embeds(config, instructions)
    digest = save_video_cache(out, videos, fps, camera, instructions, embeds, vocabulary)
    return {
        "episodes": len(videos),
        "frames": int(videos[0].frames.shape[0]),
        "sha256": digest,
        "bytes": out.stat().st_size,
    }


def assemble_world_model(recipe: Path, cache_path: Path, out: Path, vae_name: str | None = None) -> dict:
    """A verified pipeline directory from a recipe run (its selected VAE unless `vae_name` is given)."""
    import dataclasses

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from eva_runtime.training.vae_candidates import load_candidate_vae
    from eva_runtime.training.video_cache import load_video_cache
    from eva_runtime.world_model.wan.components import TinyWanConfig, build_pipeline, build_transformer
    from eva_runtime.world_model.wan.model_files import write_hashes

    report = json.loads((recipe / "recipe.json").read_text())
    cache = load_video_cache(cache_path)
    if cache.sha256 != report["cache_sha256"]:
        raise ValueError(f"{cache_path}: SHA-256 {cache.sha256} is not the recipe's cache {report['cache_sha256']}")
    chosen = vae_name or report["selection"]["chosen"]
    vae, candidate, _ = load_candidate_vae(recipe / f"vae_{chosen}.safetensors")
    weights = recipe / "transformer.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata() or {}
    values = json.loads(metadata["config"])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    config = dataclasses.replace(TinyWanConfig(**values), vocabulary=cache.vocabulary)
    if config.vae_z_dim != candidate.z_dim:
        raise ValueError(f"transformer was trained on z {config.vae_z_dim}, VAE {chosen} has z {candidate.z_dim}")
    transformer = build_transformer(config)
    transformer.load_state_dict(load_file(str(weights)), strict=True)
    pipeline = build_pipeline(config, vae=vae, transformer=transformer.eval(), seed=0)
    with torch.no_grad():
        for i, text in enumerate(cache.instructions):
            rebuilt = pipeline.encode_prompt(
                text, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH
            )[0][0]
            if not np.allclose(rebuilt.numpy(), cache.text_embeds[i], atol=1e-5):
                raise ValueError(f"the rebuilt text encoder does not reproduce the cached embedding of {text!r}")
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out, safe_serialization=True)
    description = {
        "config": config.as_dict(),
        "camera": cache.camera,
        "fps": cache.fps,
        "history_frames": report["settings"]["history_frames"],
        "horizon": report["settings"]["horizon"],
        "recipe": {
            "cache_sha256": cache.sha256,
            "device": report.get("device"),
            "selection": report["selection"],
            "vae": {chosen: report["vae"][chosen]},
            "sft": {k: v for k, v in report.get("sft", {}).items() if k != "config"},
            "transformer_extra": json.loads(metadata.get("extra", "{}")),
        },
    }
    (out / "eva_world_model.json").write_text(json.dumps(description, indent=2))
    write_hashes(out)
    return description
