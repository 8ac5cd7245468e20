"""``imgpref demo``: toy model → self-play pairs → Diffusion-DPO LoRA → before/after report."""
