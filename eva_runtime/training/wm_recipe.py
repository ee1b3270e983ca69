"""The world-model recipe: measure VAE candidates, pick one by a stated rule, then SFT the transformer on it.

One job that runs on any torch device (a GPU when one is lent; the CPU otherwise, slowly) from a video cache
(`video_cache.py`), so it needs neither the simulator nor the recordings. Budgets are either step counts or
seconds; seconds are turned into a step count from a short timing probe before training, and the step counts
actually used are written to `recipe.json`, so any run is re-run exactly with `--vae-steps` / `--sft-steps`.

Selection rule (fixed before any candidate is trained): the highest cube PSNR on held-out episodes; candidates
within `tie_db` of the best are tied, and a tie goes to fewer latent frames (cheaper rollouts on the robot's
CPU), then to the higher whole-frame PSNR.

Outputs in OUT: `vae_<name>.safetensors` per candidate, `transformer.safetensors` (the EMA weights, saved as
training goes so a cut-off run still leaves a model), `samples.gif`, and `recipe.json` (settings, timings,
measurements, the selection and its reason). `eva train world-model-assemble` turns them into a verified
diffusers pipeline directory on the machine that has the tokenizer and text encoder.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eva_runtime.atomic_file import write_text_atomically
from eva_runtime.training.vae_candidates import (
    VaeCandidate,
    VaeTraining,
    build_candidate_vae,
    latent_statistics,
    measure_vae,
    save_candidate_vae,
    train_candidate_vae,
)
from eva_runtime.training.video_cache import VideoCache, load_video_cache
from eva_runtime.training.wm_run_samples import held_out_loss, pad_video, sample_rollouts
from eva_runtime.training.wm_transformer_run import (
    SftTraining,
    TransformerRun,
    TransformerShape,
    encode_padded_clips,
    save_transformer,
    sft_step,
    transformer_config,
)

__all__ = ["CANDIDATES", "RecipeSettings", "TransformerShape", "pad_video", "run_recipe", "select_candidate"]

CANDIDATES: dict[str, VaeCandidate] = {
    # Today's shape (z 8, /4 in time), plain L1, only trained far longer: what training alone buys.
    "z8_t4_l1": VaeCandidate("z8_t4_l1", z_dim=8, foreground_weight=0.0),
    "z16_t4_fg": VaeCandidate("z16_t4_fg", z_dim=16),
    "z32_t4_fg": VaeCandidate("z32_t4_fg", z_dim=32),
    "z16_t2_fg": VaeCandidate("z16_t2_fg", z_dim=16, temporal_downsample=(False, True)),
    # Colour weighted on top: the cube is the only saturated object in the scene.
    "z32_t4_fgsat": VaeCandidate("z32_t4_fgsat", z_dim=32, saturation_weight=40.0),
}


@dataclass(frozen=True)
class RecipeSettings:
    candidates: tuple[str, ...] = tuple(CANDIDATES)
    vae_seconds: float | None = 55.0
    vae_steps: int | None = None  # one count for every candidate; overrides vae_seconds
    vae_short_batch: int = 32
    vae_long_batch: int = 16
    history_frames: int = 5
    horizon: int = 37
    end_padding: int = 16  # frames of the resting final pose appended: rollouts asked for near the end
    clip_stride: int = 2
    sft_seconds: float | None = 240.0
    sft_steps: int | None = None
    sft_batch: int = 64
    sft_lr: float = 5e-4
    sft_warmup: int = 300
    ema_decay: float = 0.999
    held_out: int = 10
    sample_steps: int = 10
    tie_db: float = 0.5
    seed: int = 0
    transformer: TransformerShape = field(default_factory=TransformerShape)
    checkpoint_seconds: float = 60.0


def select_candidate(results: dict[str, dict], tie_db: float) -> tuple[str, str]:
    """(name, reason) by the module's rule; results map name -> {cube_psnr_db, frame_psnr_db, temporal_factor}."""
    usable = {n: r for n, r in results.items() if math.isfinite(r.get("cube_psnr_db", float("nan")))}
    if not usable:
        raise ValueError("no candidate has a finite cube PSNR")
    best = max(r["cube_psnr_db"] for r in usable.values())
    tied = [n for n, r in usable.items() if r["cube_psnr_db"] >= best - tie_db]
    chosen = max(tied, key=lambda n: (usable[n]["temporal_factor"], usable[n]["frame_psnr_db"]))
    reason = (
        f"best cube PSNR {best:.2f} dB; tied within {tie_db} dB: {sorted(tied)}; "
        f"chose {chosen} (temporal factor {usable[chosen]['temporal_factor']}, "
        f"frame PSNR {usable[chosen]['frame_psnr_db']:.2f} dB)"
    )
    return chosen, reason


def _device():
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def _probe_steps(make, train_steps, seconds: float, probe: int = 4) -> tuple[int, float]:
    """Steps that fit in `seconds`, from the time of `probe` steps after one warm-up step on a throwaway model."""
    import torch

    model = make()
    train_steps(model, 1)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    began = time.perf_counter()
    train_steps(model, probe)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - began) / probe
    return max(1, int(seconds / per_step)), per_step


def _vae_phase(cache: VideoCache, settings: RecipeSettings, out: Path, device, report: dict, log) -> None:
    import torch

    train, held = cache.videos[: -settings.held_out], cache.videos[-settings.held_out :]
    clip = settings.history_frames - 1 + settings.horizon
    training = VaeTraining(
        long_clip=clip, seed=settings.seed, short_batch=settings.vae_short_batch, long_batch=settings.vae_long_batch
    )
    for name in settings.candidates:
        candidate = CANDIDATES[name]
        began = time.perf_counter()
        try:

            def make(candidate=candidate):
                torch.manual_seed(settings.seed)
                return build_candidate_vae(candidate)

            if settings.vae_steps is not None:
                steps, per_step = settings.vae_steps, None
            else:
                # Probe on the long clips (the slower phase), so the budget is an upper bound.
                probe_training = dataclasses.replace(training, short_share=0.0)
                steps, per_step = _probe_steps(
                    make,
                    lambda m, n, c=candidate, p=probe_training: train_candidate_vae(
                        m, c, train, n, p, device, lambda _: 0
                    ),
                    settings.vae_seconds,
                )
            vae = make()
            losses = train_candidate_vae(vae, candidate, train, steps, training, device, log)
            mean, std = latent_statistics(vae, train, clip, device)
            vae.register_to_config(latents_mean=mean, latents_std=std)
            measured = measure_vae(vae, held, clip, device)
            result = {
                **measured,
                "steps": steps,
                "probe_seconds_per_step": per_step,
                "final_loss": float(np.mean(losses[-20:])),
                "seconds": round(time.perf_counter() - began, 1),
                "temporal_factor": candidate.temporal_factor,
                "parameters": sum(p.numel() for p in vae.parameters()),
                "candidate": candidate.as_dict(),
            }
            save_candidate_vae(vae, candidate, out / f"vae_{name}.safetensors", {"recipe": result})
        except Exception as error:  # one failing candidate must not cost the others (or the SFT)
            result = {"error": f"{type(error).__name__}: {error}", "candidate": candidate.as_dict()}
        report["vae"][name] = result
        _write_report(out, report)
        log(f"vae {name}: {json.dumps({k: v for k, v in result.items() if k != 'candidate'})}")


def _sft_phase(cache: VideoCache, settings: RecipeSettings, chosen: str, vae, out: Path, device, report, log):
    """Transformer SFT on the chosen VAE's latents for a step count (given, or what fits the time budget)."""
    began = time.perf_counter()
    data = _sft_data(vae, cache, settings, device)
    encode_seconds = time.perf_counter() - began
    log(f"sft: {len(data['latents'])} clips {tuple(data['latents'].shape[1:])}, encoded in {encode_seconds:.0f} s")
    config = transformer_config(CANDIDATES[chosen], settings.transformer, cache)
    if settings.sft_steps is not None:
        steps, per_step = settings.sft_steps, None
    else:

        def probe(training, n: int) -> None:
            for _ in range(n):
                sft_step(training)

        steps, per_step = _probe_steps(lambda: _training(settings, 1_000_000, data, cache, config, device), probe,
                                       settings.sft_seconds)  # fmt: skip
    training = _training(settings, steps, data, cache, config, device)
    sft = {
        "chosen_vae": chosen,
        "config": config.as_dict(),
        "steps": steps,
        "probe_seconds_per_step": per_step,
        "clips": len(data["latents"]),
        "encode_seconds": round(encode_seconds, 1),
        "conditioned_latent_frames": training.conditioned,
        "curve": [],
    }
    report["sft"] = sft
    _sft_loop(training, settings, sft, out, report, log)
    held = cache.videos[-settings.held_out :]
    sft["samples"] = sample_rollouts(
        training.ema, vae, held, cache, config, settings.history_frames, settings.horizon, settings.end_padding,
        settings.sample_steps, out / "samples.gif",
    )  # fmt: skip
    _write_report(out, report)


def _sft_data(vae, cache: VideoCache, settings: RecipeSettings, device) -> dict:
    """Latents and instruction indices of every training and held-out clip."""
    import torch

    train, held = cache.videos[: -settings.held_out], cache.videos[-settings.held_out :]
    shape = (settings.history_frames, settings.horizon, settings.end_padding)
    latents, episodes = encode_padded_clips(vae, train, *shape, settings.clip_stride, device)
    held_latents, held_episodes = encode_padded_clips(vae, held, *shape, 8, device)
    index = {text: i for i, text in enumerate(cache.instructions)}
    return {
        "latents": latents,
        "text": torch.tensor([index[train[e].instruction] for e in episodes], device=device),
        "held_latents": held_latents,
        "held_text": torch.tensor([index[held[e].instruction] for e in held_episodes], device=device),
    }


def _training(settings: RecipeSettings, steps: int, data: dict, cache: VideoCache, config, device) -> SftTraining:
    """The shared training state (wm_transformer_run) for `steps` steps of the recipe's settings."""
    import torch

    from eva_runtime.world_model.wan.components import build_transformer

    run = TransformerRun(
        steps=steps,
        batch=settings.sft_batch,
        lr=settings.sft_lr,
        warmup=settings.sft_warmup,
        ema_decay=settings.ema_decay,
        history_frames=settings.history_frames,
        horizon=settings.horizon,
        seed=settings.seed,
    )
    model = build_transformer(config, seed=settings.seed).to(device).train()
    return SftTraining(
        run=run,
        out=Path("."),
        cache=cache,
        vae=None,
        config=config,
        data=data,
        embeds=torch.from_numpy(cache.text_embeds).to(device),
        conditioned=(settings.history_frames - 1) // config.temporal_factor + 1,
        model=model,
        ema=copy.deepcopy(model).eval().requires_grad_(False),
        optimizer=torch.optim.AdamW(model.parameters(), lr=settings.sft_lr, weight_decay=0.0),
        generator=torch.Generator(device=device).manual_seed(settings.seed),
        report={},
    )


def _sft_loop(training: SftTraining, settings: RecipeSettings, sft: dict, out: Path, report: dict, log) -> None:
    """Train, logging the held-out loss every 250 steps and saving the EMA weights every `checkpoint_seconds`."""
    steps, config, data = training.run.steps, training.config, training.data
    began, last_save, running = time.perf_counter(), time.perf_counter(), []
    held_text = training.embeds[data["held_text"]]
    for step in range(steps):
        running.append(sft_step(training))
        if step % 250 == 0 or step == steps - 1:
            value, running = float(np.mean(running)), []
            held_loss = held_out_loss(
                training.ema, data["held_latents"], held_text, training.conditioned, config.flow_shift,
                data["latents"].device,
            )  # fmt: skip
            seconds = round(time.perf_counter() - began, 1)
            sft["curve"].append({"step": step, "loss": value, "held_out_loss_ema": held_loss, "seconds": seconds})
            log(f"  sft step {step}/{steps} loss {value:.4f} held-out (EMA) {held_loss:.4f} ({seconds} s)")
        if time.perf_counter() - last_save > settings.checkpoint_seconds or step == steps - 1:
            save_transformer(training.ema, config, out / "transformer.safetensors", {"step": step + 1, "of": steps})
            sft["saved_step"] = step + 1
            _write_report(out, report)
            last_save = time.perf_counter()
    sft["train_seconds"] = round(time.perf_counter() - began, 1)


def _write_report(out: Path, report: dict) -> None:
    write_text_atomically(out / "recipe.json", json.dumps(report, indent=2, default=str))


def run_recipe(cache_path: Path, out: Path, settings: RecipeSettings, log=print) -> dict:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    device = _device()
    cache = load_video_cache(cache_path)
    if len(cache.videos) <= settings.held_out:
        raise ValueError(f"{cache_path}: {len(cache.videos)} episodes, need more than {settings.held_out}")
    report: dict = {
        "cache_sha256": cache.sha256,
        "episodes": len(cache.videos),
        "held_out_episodes": [v.name for v in cache.videos[-settings.held_out :]],
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "settings": dataclasses.asdict(settings),
        "vae": {},
    }
    began = time.perf_counter()
    _vae_phase(cache, settings, out, device, report, log)
    chosen, reason = select_candidate(report["vae"], settings.tie_db)
    report["selection"] = {"chosen": chosen, "reason": reason}
    _write_report(out, report)
    log(f"selected {chosen}: {reason}")
    from eva_runtime.training.vae_candidates import load_candidate_vae

    vae, _, _ = load_candidate_vae(out / f"vae_{chosen}.safetensors")
    vae.to(device)
    _sft_phase(cache, settings, chosen, vae, out, device, report, log)
    report["seconds"] = round(time.perf_counter() - began, 1)
    _write_report(out, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--vae-seconds", type=float, default=55.0)
    parser.add_argument("--vae-steps", type=int, default=None)
    parser.add_argument("--vae-short-batch", type=int, default=32)
    parser.add_argument("--vae-long-batch", type=int, default=16)
    parser.add_argument("--sft-seconds", type=float, default=240.0)
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--sft-batch", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = RecipeSettings(
        candidates=tuple(args.candidates.split(",")),
        vae_seconds=args.vae_seconds,
        vae_steps=args.vae_steps,
        vae_short_batch=args.vae_short_batch,
        vae_long_batch=args.vae_long_batch,
        sft_seconds=args.sft_seconds,
        sft_steps=args.sft_steps,
        sft_batch=args.sft_batch,
        held_out=args.held_out,
        seed=args.seed,
    )
    unknown = sorted(set(settings.candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {sorted(CANDIDATES)}")
    run_recipe(args.cache, args.out, settings, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
