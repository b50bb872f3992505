"""Exercise 10 — vanilla history guidance (videodiff.sampling, lesson 10).

History guidance (Song et al. 2025, "History-Guided Video Diffusion") is classifier-free guidance
(exercise 04) whose condition is the *history*: the frames of the window that are already known.
A model trained with diffusion forcing has learned to denoise with any frame at any noise level, so
it also knows how to predict with the history wiped out — shown as pure noise at the last level
T − 1 — and that is the unconditional prediction, with no extra training and no null label.

Both predictions come from the same window x (B, F, C, H, W), shown two ways:

    conditional branch     history frames as given (clean), at level 0;  other frames as they are, at t
    unconditional branch   history frames replaced by pure noise, at level T − 1;  other frames as above

Only the history columns change between the branches; the frames being generated are the same noisy
latents at the same t in both.  The two branches go through the denoiser as *one* batch (2B, F, …),
so that a sampling row costs one call, and the guided prediction is

    u + s (c − u),   written  c + (s − 1)(c − u)  so that s = 1 returns c bit for bit (pitfall 8)

s = 0 is the model with its history wiped out; s > 1 follows the history more strictly (too strictly,
lesson 10 shows: the video freezes).

Your task: write the function.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 10 lessons/exercises/ex10_work.py
(compared with ``videodiff.sampling.history_guided_prediction`` with ``HistoryGuidance("vanilla", s)``,
on a fake denoiser that records what it is shown).  Reference: ``solutions/ex10_history_guidance.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def vanilla_history_guidance(denoiser, x: torch.Tensor, t: torch.Tensor, history: torch.Tensor, noise: torch.Tensor,
                             scale: float, num_train_timesteps: int) -> torch.Tensor:
    """The history-guided prediction for a window.

    denoiser(x_t (n, F, C, H, W), t (n, F) int64) -> prediction (n, F, C, H, W);
    x: (B, F, C, H, W), the history frames holding their clean latents, the others their noisy ones;
    t: (B, F) int64, the levels of the frames being generated (its history columns are not used);
    history: (F,) bool, the known frames;  noise: (B, F, C, H, W), the pure noise that replaces the
    history in the unconditional branch;  scale: s;  num_train_timesteps: T.
    Returns (B, F, C, H, W).
    """
    batch = x.shape[0]
    fully_noised = num_train_timesteps - 1
    in_history = history.view(1, -1, *[1] * (x.ndim - 2))  # (1, F, 1, 1, 1): broadcasts over a window
    # 1. The conditional branch: x as it is; the history shown clean, at level 0.
    x_conditional = x
    t_conditional = todo("t with its history columns set to 0 (torch.where(history, 0, t))")
    # 2. The unconditional branch: the history replaced by the noise, shown at level T − 1.
    x_unconditional = todo("x with its history frames replaced by the noise (torch.where with in_history)")
    t_unconditional = todo("t with its history columns set to T − 1")
    # 3. One call with both branches stacked along the batch: (2B, F, C, H, W) and (2B, F).
    output = todo("denoiser(torch.cat([...]), torch.cat([...]))")
    conditional, unconditional = output.split(batch)  # (B, F, C, H, W) each
    # 4. Combine, exactly the conditional prediction at s = 1.
    return todo("c + (s − 1)(c − u)")
