"""toydiff: diffusion on two-dimensional points — schedules, samplers, guidance and the shared training loop."""
