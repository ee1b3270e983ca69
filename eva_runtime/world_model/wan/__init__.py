"""The diffusers Wan world model: tiny components for CPU, the denoising sampler, LoRA, and the WorldModel backend."""
