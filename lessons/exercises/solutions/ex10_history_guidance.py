"""Reference answer to exercise 10 — vanilla history guidance.

    conditional:    history clean at level 0;          unconditional: history = pure noise at level T − 1
    one call on both branches stacked along the batch;  c + (s − 1)(c − u)

The library's version is ``videodiff.sampling.history_guided_prediction`` with
``HistoryGuidance("vanilla", s)``: it builds every mode (vanilla, fractional, temporal) from such
branches, shows generated history at a stabilisation level, and at s = 1 runs the conditional branch
alone.
"""
import torch


def vanilla_history_guidance(denoiser, x: torch.Tensor, t: torch.Tensor, history: torch.Tensor, noise: torch.Tensor,
                             scale: float, num_train_timesteps: int) -> torch.Tensor:
    """The history-guided prediction for a window (B, F, C, H, W)."""
    batch = x.shape[0]
    fully_noised = num_train_timesteps - 1
    in_history = history.view(1, -1, *[1] * (x.ndim - 2))  # (1, F, 1, 1, 1)
    # 1. Conditional: the history as given, clean, at level 0.
    x_conditional = x
    t_conditional = torch.where(history, 0, t)  # (B, F)
    # 2. Unconditional: the history wiped out, pure noise at level T − 1; the other frames unchanged.
    x_unconditional = torch.where(in_history, noise, x)  # (B, F, C, H, W)
    t_unconditional = torch.where(history, fully_noised, t)  # (B, F)
    # 3. Both branches in one call.
    output = denoiser(torch.cat([x_conditional, x_unconditional]), torch.cat([t_conditional, t_unconditional]))
    conditional, unconditional = output.split(batch)  # (B, F, C, H, W) each
    # 4. u + s (c − u), written around c so that s = 1 is c exactly.
    return conditional + (scale - 1.0) * (conditional - unconditional)
