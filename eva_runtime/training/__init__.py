"""Training of the world model: VAE, supervised fine-tuning (flow matching), and alignment (Flow-GRPO)."""
