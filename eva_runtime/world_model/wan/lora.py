"""LoRA adapters on the Wan transformer (peft): add, save with their metadata, load by name, enable/disable.

Saved through diffusers' `WanImageToVideoPipeline.save_lora_weights` with `transformer_lora_adapter_metadata`, so
rank and alpha survive the round trip (without the metadata a reload silently uses alpha = rank,
docs/references.md §3), plus `eva_hashes.json` so a corrupted adapter is refused at load.
"""

from __future__ import annotations

from pathlib import Path

from eva_runtime.world_model.wan.model_files import verify_hashes, write_hashes

__all__ = ["WAN_LORA_TARGETS", "add_lora", "fuse_loaded_adapters", "load_lora", "save_lora"]

# Self-attention, cross-attention (and the I2V image-context projections when present), feed-forward.
WAN_LORA_TARGETS = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "attn2.add_k_proj",
    "attn2.add_v_proj",
    "ffn.net.0.proj",
    "ffn.net.2",
)


def add_lora(transformer, name: str, rank: int, alpha: float | None = None, targets=WAN_LORA_TARGETS) -> None:
    """A new adapter `name` (B initialised to zero: the model's output is unchanged until trained)."""
    from peft import LoraConfig

    present = {n.split(".", 2)[-1] for n, _ in transformer.named_modules()}
    modules = [t for t in targets if any(p.endswith(t) for p in present)]
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=modules, lora_dropout=0.0),
        adapter_name=name,
    )
    transformer.set_adapter(name)


def save_lora(transformer, name: str, directory: Path | str) -> Path:
    from diffusers import WanImageToVideoPipeline
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(transformer, adapter_name=name)
    metadata = transformer.peft_config[name].to_dict()
    metadata = {k: (sorted(v) if isinstance(v, set) else v) for k, v in metadata.items()}
    WanImageToVideoPipeline.save_lora_weights(
        directory, transformer_lora_layers=state, transformer_lora_adapter_metadata=metadata
    )
    write_hashes(directory)
    return directory


def load_lora(pipeline, source: Path | str, name: str, weight: float = 1.0) -> None:
    """Load an adapter into `pipeline.transformer` under `name`, active at `weight` beside every adapter loaded
    before it (at their weights): a world model's adapters all apply, fused or not.

    `source` is a directory written by `save_lora` (verified against its eva_hashes.json here) or a single
    safetensors file whose hash the caller has verified (a deployment bundle's adapter file).
    """
    source = Path(source)
    if source.is_dir():
        verify_hashes(source)
        pipeline.load_lora_weights(str(source), adapter_name=name)
    else:
        pipeline.load_lora_weights(str(source.parent), weight_name=source.name, adapter_name=name)
    loaded = _loaded_adapter_weights(pipeline)
    loaded[name] = weight
    pipeline.set_adapters(list(loaded), list(loaded.values()))


def _loaded_adapter_weights(pipeline) -> dict[str, float]:
    """The weights of the adapters `load_lora` put into this transformer (diffusers keeps names, not weights)."""
    return pipeline.transformer.__dict__.setdefault("_eva_loaded_adapter_weights", {})


def fuse_loaded_adapters(pipeline, adapters: list[tuple[str, float]]) -> None:
    """Bake the loaded adapters, each at its weight, into the transformer's weights and drop the LoRA layers.

    For serving: unfused, every adapted linear layer runs its low-rank path beside the base one, 9 % more time a
    rollout on the CPU; fused, a rollout costs what the base's does (bench/lora_fusion.py).
    """
    if not adapters:
        return
    names, weights = [name for name, _ in adapters], [weight for _, weight in adapters]
    pipeline.set_adapters(names, weights)
    pipeline.fuse_lora(components=["transformer"], adapter_names=names)
    pipeline.unload_lora_weights()
    _loaded_adapter_weights(pipeline).clear()
