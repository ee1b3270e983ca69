"""`WanWorldModel`: the WorldModel protocol on a diffusers Wan image-to-video model, from a local directory.

Two layouts, told apart by the transformer's config:
- Wan2.2-style I2V (no image encoder, `expand_timesteps`): our own denoising loop (`sampling.py`, equal to the
  pipeline's), which also takes several past frames as clean history latents (diffusion forcing) and batches the
  G samples of a request in one transformer call;
- Wan2.1 I2V (CLIP image encoder, `image_dim` set): the diffusers pipeline call itself, one conditioning frame,
  the prompt repeated G times (`num_videos_per_prompt > 1` crashes that pipeline, docs/references.md §3) and the full
  512-token text context its attention split needs.
Base weights and LoRA adapters are hash-verified before loading. Prompt embeddings are cached per instruction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eva_runtime.idm.windows import resize_video
from eva_runtime.world_model.protocol import Rollout, RolloutRequest
from eva_runtime.world_model.wan.cpu_fast_paths import install_cpu_fast_paths
from eva_runtime.world_model.wan.latents import decode_latents, encode_frames, latent_frames
from eva_runtime.world_model.wan.model_files import verify_hashes

__all__ = ["WanSettings", "WanWorldModel", "load_wan_world_model"]

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class WanSettings:
    base: str
    camera: str
    fps: float
    image_size: tuple[int, int]
    adapters: tuple[dict, ...] = ()  # {"name", "path", "weight"}
    steps: int = 10
    guidance: float = 1.0
    history_frames: int = 1  # 1 + k * temporal factor observed frames as clean latents
    max_sequence_length: int = 32
    dtype: str = "float32"
    device: str = "auto"
    model_id: str = "wan"
    negative_prompt: str = ""
    threads: int | None = None  # torch CPU threads (None: torch's default); a planner beside a control loop: 1
    cpu_fast_paths: bool = True  # oneDNN convolutions and a strided-free RMS norm on the CPU (cpu_fast_paths.py)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"world_model.dtype {self.dtype!r} not in {_DTYPES}")
        if self.steps < 1:
            raise ValueError(f"world_model.steps must be >= 1, got {self.steps}")
        if self.history_frames < 1:
            raise ValueError(f"world_model.history_frames must be >= 1, got {self.history_frames}")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class WanWorldModel:
    def __init__(self, pipeline, settings: WanSettings) -> None:
        import torch

        self.pipeline = pipeline
        self.settings = settings
        self.model_id = settings.model_id
        self.fps = float(settings.fps)
        self.cameras = (settings.camera,)
        self.device = _device(settings.device)
        self.dtype = getattr(torch, settings.dtype)
        self.temporal = int(pipeline.vae.config.scale_factor_temporal)
        self.with_image_encoder = pipeline.transformer.config.image_dim is not None
        if self.with_image_encoder and settings.max_sequence_length != 512:
            raise ValueError("Wan2.1 I2V splits image and text context at len - 512: max_sequence_length must be 512")
        if self.with_image_encoder and settings.history_frames != 1:
            raise ValueError("history conditioning needs the Wan2.2-style layout (no image encoder)")
        if (settings.history_frames - 1) % self.temporal:
            raise ValueError(f"history_frames must be 1 + k * {self.temporal}, got {settings.history_frames}")
        pipeline.to(self.device)
        if self.device.type == "cpu" and settings.cpu_fast_paths:
            install_cpu_fast_paths(pipeline.vae, pipeline.transformer)
        self._prompts: dict[str, tuple[Any, Any]] = {}

    @property
    def transformer(self):
        return self.pipeline.transformer

    def prompt_embeds(self, instruction: str):
        """(positive, negative-or-None) text embeddings for one instruction, cached."""
        import torch

        if instruction not in self._prompts:
            with torch.no_grad():
                positive, negative = self.pipeline.encode_prompt(
                    instruction,
                    negative_prompt=self.settings.negative_prompt,
                    do_classifier_free_guidance=self.settings.guidance != 1.0,
                    max_sequence_length=self.settings.max_sequence_length,
                    device=self.device,
                )
            self._prompts[instruction] = (positive, negative)
        return self._prompts[instruction]

    def history(self, frames: np.ndarray) -> np.ndarray:
        """The last `history_frames` observed frames at the model's size (repeating the oldest when fewer)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise ValueError(f"frames must be uint8 (K, H, W, 3) with K >= 1, got {frames.dtype} {frames.shape}")
        want = self.settings.history_frames
        if len(frames) < want:
            frames = np.concatenate([np.repeat(frames[:1], want - len(frames), 0), frames])
        return resize_video(frames[-want:], self.settings.image_size)

    def sample_latents(self, history: np.ndarray, instruction: str, horizon: int, samples: int, seed: int):
        """(G, z, t, h, w) float32 latents with the history's clean latents in front; the Wan2.2-style loop."""
        import torch

        from eva_runtime.world_model.wan.sampling import Denoiser, euler_sample, flow_sigmas

        total = len(history) - 1 + horizon
        frames = latent_frames(total, self.temporal)
        condition_latents = encode_frames(self.pipeline.vae, history[None]).to(self.device)
        conditioned = condition_latents.shape[2]
        positive, negative = self.prompt_embeds(instruction)
        height, width = condition_latents.shape[-2:]
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((samples, condition_latents.shape[1], frames, height, width), generator=generator)
        condition = torch.zeros_like(noise)
        condition[:, :, :conditioned] = condition_latents
        denoiser = Denoiser(
            self.transformer,
            positive.expand(samples, -1, -1),
            condition.to(self.device),
            conditioned,
            negative.expand(samples, -1, -1) if negative is not None else None,
            self.settings.guidance,
        )
        return euler_sample(denoiser, noise.to(self.device), flow_sigmas(self.pipeline.scheduler, self.settings.steps))

    def rollout(self, request: RolloutRequest) -> Rollout:
        began = time.perf_counter()
        if self.settings.camera not in request.frames:
            raise ValueError(f"the world model reads camera {self.settings.camera!r}; got {sorted(request.frames)}")
        if request.horizon < 1 or (request.horizon - 1) % self.temporal:
            raise ValueError(f"horizon must be 1 + k * {self.temporal} frames, got {request.horizon}")
        history = self.history(request.frames[self.settings.camera])
        if self.with_image_encoder:
            video = self._pipeline_rollout(history[-1], request)
        else:
            latents = self.sample_latents(history, request.instruction, request.horizon, request.samples, request.seed)
            video = decode_latents(self.pipeline.vae, latents)[:, len(history) - 1 :]
        return Rollout({self.settings.camera: video}, self.fps, time.perf_counter() - began, self.model_id)

    def _pipeline_rollout(self, image: np.ndarray, request: RolloutRequest) -> np.ndarray:
        import torch
        from PIL import Image

        height, width = self.settings.image_size
        generators = [torch.Generator().manual_seed(int(request.seed) * 1000 + i) for i in range(request.samples)]
        output = self.pipeline(
            image=Image.fromarray(image),
            prompt=[request.instruction] * request.samples,
            negative_prompt=[self.settings.negative_prompt] * request.samples,
            height=height,
            width=width,
            num_frames=request.horizon,
            num_inference_steps=self.settings.steps,
            guidance_scale=self.settings.guidance,
            generator=generators,
            max_sequence_length=self.settings.max_sequence_length,
            output_type="np",
        ).frames
        return (np.clip(np.asarray(output), 0, 1) * 255).round().astype(np.uint8)

    def warm_up(self) -> None:
        """One tiny rollout so the first plan does not pay for lazy initialisation."""
        height, width = self.settings.image_size
        frames = np.zeros((1, height, width, 3), np.uint8)
        self.rollout(RolloutRequest({self.settings.camera: frames}, "", 1 + self.temporal, seed=0))


def load_wan_world_model(spec: dict, fuse_adapters: bool = True) -> WanWorldModel:
    """From a world-model spec: {"base": dir, "adapters": [...], "camera", "fps", ...}; hashes verified first.
    `fuse_adapters=False` keeps the adapters as LoRA layers (only to measure what fusing saves, in
    bench/lora_fusion.py)."""
    import torch
    from diffusers import WanImageToVideoPipeline

    from eva_runtime.world_model.wan.lora import fuse_loaded_adapters, load_lora

    base = Path(spec["base"])
    verify_hashes(base)
    pinned = spec.get("base_sha256")
    if pinned is not None:
        import hashlib

        actual = hashlib.sha256((base / "eva_hashes.json").read_bytes()).hexdigest()
        if actual != pinned:
            raise ValueError(f"{base}: eva_hashes.json has SHA-256 {actual}, expected {pinned} (a different base)")
    described = (
        json.loads((base / "eva_world_model.json").read_text()) if (base / "eva_world_model.json").is_file() else {}
    )
    config = described.get("config", {})
    known = set(WanSettings.__dataclass_fields__)
    values = {k: v for k, v in spec.items() if k in known and k not in ("kind",)}
    values.setdefault("camera", described.get("camera", "cam_high"))
    values.setdefault("fps", described.get("fps", 12.5))
    # A model trained with clean history latents is only in distribution with that many observed frames.
    values.setdefault("history_frames", described.get("history_frames", 1))
    values.setdefault("image_size", tuple(config.get("image_size", (64, 64))))
    values["image_size"] = tuple(values["image_size"])
    values["adapters"] = tuple(spec.get("adapters", ()))
    settings = WanSettings(**values)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    pipeline = WanImageToVideoPipeline.from_pretrained(str(base), dtype=getattr(torch, settings.dtype))
    for adapter in settings.adapters:
        load_lora(pipeline, adapter["path"], adapter["name"], float(adapter.get("weight", 1.0)))
    if fuse_adapters:
        fuse_loaded_adapters(pipeline, [(a["name"], float(a.get("weight", 1.0))) for a in settings.adapters])
    pipeline.transformer.eval()
    return WanWorldModel(pipeline, settings)
