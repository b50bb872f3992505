"""Denoisers for low-dimensional data: an MLP that sees x_t, the timestep t and optionally a class label.

                 x_t ──[Fourier features]──► input_projection ──► h
                                                                  │
  t ──► sinusoidal embedding ──► time_mlp ──┐                      ▼
                                            ├─► c ──► residual blocks (c added inside each block)
  label ──► label_embedding (+ null) ───────┘                      │
                                                                  ▼
                                                   output_projection ──► ε̂ (or x̂_0, v̂)
                                                   (no final norm: the output may grow with |x_t|)

The label table has one extra row, the reserved *null label* (index ``num_classes``), which means
"no label" and is what classifier-free guidance uses for its unconditional pass.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; DDPM uses the same).

    t: int64 tensor of any shape (...).  Returns float32 (..., dim): [cos(t·f_i), sin(t·f_i)],
    with frequencies f_i = max_period^(-i / (dim/2)) spread geometrically.
    """
    if dim % 2:
        raise ValueError(f"timestep embedding dimension must be even, got {dim}")
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.to(torch.float32)[..., None] * frequencies  # (..., half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (..., dim)


class FourierFeatures(nn.Module):
    """Map x to [sin(2π B x), cos(2π B x)] with a fixed random B (Tancik et al. 2020).

    Low-dimensional inputs are hard for an MLP to resolve finely; these features let it represent
    thin structures (the spiral's arms) with fewer parameters. B is a buffer: saved, never trained.
    """

    def __init__(self, input_dim: int, num_frequencies: int, scale: float, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("frequencies", torch.randn(input_dim, num_frequencies, generator=generator) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x @ self.frequencies  # (B, F)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # (B, 2F)


@dataclass
class MLPConfig:
    data_dim: int = 2               # dimension of each point
    hidden_dim: int = 128
    num_blocks: int = 3
    time_embedding_dim: int = 64
    fourier_frequencies: int = 0    # 0 disables Fourier features of the input
    fourier_scale: float = 1.0      # std of the random frequencies (in cycles per data unit)
    num_classes: int = 0            # 0: unconditional; else labels 0..num_classes-1, null = num_classes
    output_dim: Optional[int] = None  # defaults to data_dim (a denoiser); num_classes for a classifier


class ResidualBlock(nn.Module):
    """h + W2 · SiLU(W1 · SiLU(LayerNorm(h)) + U · c): a pre-norm MLP block with the condition added inside."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, hidden_dim)
        self.condition = nn.Linear(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.activation = nn.SiLU()

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        inner = self.fc1(self.activation(self.norm(h))) + self.condition(c)  # (B, H)
        return h + self.fc2(self.activation(inner))                           # (B, H)


class MLPDenoiser(nn.Module):
    """A time- (and optionally label-) conditioned MLP: ``model(x_t, t, labels=None) -> output``."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        input_dim = config.data_dim
        self.fourier = None
        if config.fourier_frequencies > 0:
            self.fourier = FourierFeatures(config.data_dim, config.fourier_frequencies, config.fourier_scale)
            input_dim += 2 * config.fourier_frequencies
        self.input_projection = nn.Linear(input_dim, config.hidden_dim)
        self.time_mlp = nn.Sequential(
            nn.Linear(config.time_embedding_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, config.hidden_dim),
        )
        self.label_embedding = (
            nn.Embedding(config.num_classes + 1, config.hidden_dim) if config.num_classes > 0 else None
        )
        self.blocks = nn.ModuleList(ResidualBlock(config.hidden_dim) for _ in range(config.num_blocks))
        # No LayerNorm before the output: it would bound |output| whatever x_t is, while the ideal
        # ε̂ or v̂ grows linearly with |x_t| far from the data.
        self.output_projection = nn.Linear(config.hidden_dim, config.output_dim or config.data_dim)

    @property
    def null_label(self) -> Optional[int]:
        """The reserved label index meaning "unconditional", or None for an unconditional model."""
        return self.config.num_classes if self.config.num_classes > 0 else None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t: (B, data_dim);  t: (B,) int64;  labels: (B,) int64 or None (= null label).

        Returns (B, output_dim).
        """
        if x_t.ndim != 2 or x_t.shape[1] != self.config.data_dim:
            raise ValueError(f"expected points of shape (B, {self.config.data_dim}), got {tuple(x_t.shape)}")
        features = x_t if self.fourier is None else torch.cat([x_t, self.fourier(x_t)], dim=-1)  # (B, in)
        h = self.input_projection(features)                                                 # (B, H)
        c = self.time_mlp(timestep_embedding(t.expand(x_t.shape[0]), self.config.time_embedding_dim))  # (B, H)
        if self.label_embedding is not None:
            if labels is None:
                labels = torch.full((x_t.shape[0],), self.null_label, dtype=torch.int64, device=x_t.device)
            c = c + self.label_embedding(labels)                                            # (B, H)
        elif labels is not None:
            raise ValueError("this model is unconditional (num_classes = 0) but labels were given")
        for block in self.blocks:
            h = block(h, c)                                                                 # (B, H)
        return self.output_projection(h)                                                    # (B, out)

    def config_dict(self) -> dict:
        return asdict(self.config)


class NoisyClassifier(MLPDenoiser):
    """p(y | x_t, t): the same time-conditioned MLP, ending in class logits.  ``classifier(x_t, t)``.

    Trained on noisy points x_t at random t, so its gradient ∇ log p(y | x_t) is meaningful along the
    whole sampling path (classifier guidance, Dhariwal & Nichol 2021).
    """

    def __init__(self, config: MLPConfig):
        if config.num_classes < 2:
            raise ValueError("a classifier needs num_classes >= 2")
        super().__init__(MLPConfig(**{**asdict(config), "output_dim": config.num_classes}))
        # The classifier sees no label input; keep its config's num_classes for the logits only.
        self.label_embedding = None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t: (B, data_dim); t: (B,) int64.  Returns logits (B, num_classes)."""
        return super().forward(x_t, t, None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
