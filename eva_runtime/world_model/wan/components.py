"""Tiny Wan components built offline from small configs (no model hub here): tokenizer, text encoder, VAE,
transformer, scheduler, assembled into a real `WanImageToVideoPipeline` and saved as a diffusers directory.

The tiny model is the Wan2.2-style image-to-video layout (`expand_timesteps=True`: the clean conditioning latent
replaces latent frame 0 and its tokens get timestep 0; `in_channels = z_dim`; no CLIP image encoder), which is
also what diffusion-forcing history conditioning needs. The text encoder is a tiny UMT5 with fixed random weights
over a word-level vocabulary of the tasks' instructions (with one instruction per task there is nothing to
learn in it: the transformer's cross-attention learns what the fixed embeddings mean). The VAE is trained here
(`eva_runtime.training.wm_vae`); its latent statistics are written into its config after training.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

__all__ = [
    "TinyWanConfig",
    "build_pipeline",
    "build_scheduler",
    "build_text_encoder",
    "build_tokenizer",
    "build_transformer",
    "build_vae",
    "instruction_vocabulary",
]

# The I2V attention splits image and text context at `len - 512` (docs/references.md §3): keep the real length.
MAX_SEQUENCE_LENGTH = 512
_SPECIAL = ("<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class TinyWanConfig:
    image_size: tuple[int, int] = (64, 64)  # height, width of generated frames
    # VAE: /4 spatial (two down stages), /4 temporal (both stages), z_dim latent channels.
    vae_base_dim: int = 16
    vae_dim_mult: tuple[int, ...] = (1, 2, 2)
    vae_z_dim: int = 8
    vae_res_blocks: int = 1
    vae_temporal_downsample: tuple[bool, ...] = (True, True)
    # Transformer.
    heads: int = 4
    head_dim: int = 32
    layers: int = 4
    ffn_dim: int = 256
    freq_dim: int = 64
    # Text encoder.
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 2
    text_ff: int = 64
    flow_shift: float = 3.0
    vocabulary: tuple[str, ...] = field(default_factory=tuple)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae_dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.vae_temporal_downsample)

    def as_dict(self) -> dict:
        return asdict(self)


def instruction_vocabulary(instructions: Iterable[str]) -> tuple[str, ...]:
    """Sorted lower-case words of the instructions (the tokenizer's vocabulary, specials excluded)."""
    words = {w for text in instructions for w in re.findall(r"[a-z0-9]+", text.lower())}
    return tuple(sorted(words))


def build_tokenizer(vocabulary: Iterable[str]):
    """A word-level fast tokenizer (lower-cased, punctuation dropped) that appends `</s>` like T5's."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*_SPECIAL, *vocabulary))}
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"[^a-z0-9 ]"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
    )


def build_vae(config: TinyWanConfig, latents_mean=None, latents_std=None):
    from diffusers import AutoencoderKLWan

    z = config.vae_z_dim
    return AutoencoderKLWan(
        base_dim=config.vae_base_dim,
        z_dim=z,
        dim_mult=list(config.vae_dim_mult),
        num_res_blocks=config.vae_res_blocks,
        temperal_downsample=list(config.vae_temporal_downsample),
        latents_mean=list(latents_mean) if latents_mean is not None else [0.0] * z,
        latents_std=list(latents_std) if latents_std is not None else [1.0] * z,
        scale_factor_spatial=config.spatial_factor,
        scale_factor_temporal=config.temporal_factor,
    )


def build_text_encoder(config: TinyWanConfig, vocab_size: int, seed: int = 0):
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)  # the text encoder stays at its initial weights: the seed makes it reproducible
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size,
            d_model=config.text_dim,
            d_kv=config.text_dim // config.text_heads,
            d_ff=config.text_ff,
            num_layers=config.text_layers,
            num_heads=config.text_heads,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()


def build_transformer(config: TinyWanConfig, seed: int = 0):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        in_channels=config.vae_z_dim,
        out_channels=config.vae_z_dim,
        text_dim=config.text_dim,
        freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim,
        num_layers=config.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=256,
    )


def build_scheduler(config: TinyWanConfig):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=config.flow_shift)


def build_pipeline(config: TinyWanConfig, vae=None, transformer=None, seed: int = 0):
    """A real `WanImageToVideoPipeline` (Wan2.2-style I2V) from the tiny config."""
    from diffusers import WanImageToVideoPipeline

    tokenizer = build_tokenizer(config.vocabulary)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(config, len(tokenizer), seed),
        vae=vae if vae is not None else build_vae(config),
        scheduler=build_scheduler(config),
        transformer=transformer if transformer is not None else build_transformer(config, seed),
        expand_timesteps=True,
    )
