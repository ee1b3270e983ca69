"""Held-out flow-matching loss of saved transformers on a clip set (e.g. DAgger clips from episodes no model was
trained on), with one fixed noise draw for all, so the numbers compare: did a model learn the labels' futures
from states it has not seen? Prints JSON, one entry per transformer, and each one's difference from the first.

    .venv/bin/python bench/dagger_clip_loss.py --clips runs/dagger_held/clips.npz \
        --vae models/vae_transfer_cube_fgsat.safetensors --cache data/tc200.npz \
        models/wan_fgw2_sft_transformer.safetensors runs/sft_dagger1/transformer.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from eva_runtime.training.dagger_labels import load_clip_set
from eva_runtime.training.vae_candidates import load_candidate_vae
from eva_runtime.training.video_cache import load_video_cache
from eva_runtime.training.wm_run_samples import held_out_loss
from eva_runtime.world_model.wan.components import TinyWanConfig, build_transformer
from eva_runtime.world_model.wan.latents import encode_frames


def _transformer(path: Path, vocabulary):
    with safe_open(str(path), framework="pt") as handle:
        values = json.loads((handle.metadata() or {})["config"])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    config = dataclasses.replace(TinyWanConfig(**values), vocabulary=vocabulary)
    model = build_transformer(config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval(), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transformers", nargs="+", type=Path)
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--vae", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="the video cache the models were trained with")
    parser.add_argument("--stage-below", type=int, default=None, help="only clips whose state is below this stage")
    args = parser.parse_args()
    torch.set_num_threads(2)
    clips, cache = load_clip_set(args.clips), load_video_cache(args.cache)
    chosen = np.arange(len(clips))
    if args.stage_below is not None:
        chosen = chosen[clips.stage_start < args.stage_below]
    vae, candidate, _ = load_candidate_vae(args.vae)
    latents = torch.cat([encode_frames(vae, clips.frames[chosen[b : b + 32]]) for b in range(0, len(chosen), 32)])
    embed = torch.from_numpy(cache.text_embeds[cache.embed_index(clips.instruction)])
    embeds = embed[None].expand(len(latents), *embed.shape)
    conditioned = (clips.history_frames - 1) // candidate.temporal_factor + 1
    results = []
    for path in args.transformers:
        model, config = _transformer(path, cache.vocabulary)
        loss = held_out_loss(model, latents, embeds, conditioned, config.flow_shift, torch.device("cpu"))
        results.append({"transformer": str(path), "loss": loss})
    for entry in results:
        entry["minus_first"] = entry["loss"] - results[0]["loss"]
    print(json.dumps({"clips": str(args.clips), "clips_sha256": clips.sha256, "n": len(chosen), "results": results}))


if __name__ == "__main__":
    main()
