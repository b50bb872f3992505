"""Exponential moving average of a model's weights (Polyak averaging), the model we sample from.

    θ_ema ← d · θ_ema + (1 - d) · θ,   with d warmed up as min(decay, (1 + n) / (10 + n))

The warm-up keeps the early average from being dominated by the random initial weights.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0
        self._ema_parameters = list(self.model.parameters())
        self._ema_buffers = list(self.model.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(self._ema_parameters, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self._ema_buffers, model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
