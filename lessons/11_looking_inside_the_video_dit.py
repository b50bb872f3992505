# %% [markdown]
# # Lesson 11 — Looking inside the video DiT
#
# Lessons 09 and 10 judged the video DiT from outside: by what its rollouts look like to lesson 08's
# tracker.  This lesson opens it.  Every block of the DiT has named *hook points*, identity functions
# at the sites worth looking at (the residual stream, the queries and keys, the attention pattern, each
# head's output), where a hook can read an activation or replace it — the design of TransformerLens,
# in plain PyTorch (`imagediff.hooks`).  With them the lesson caches what one clip does inside the
# network, sums the attention patterns into frame-to-frame maps, scores every head for the patterns a
# video model may learn (look at the previous frame, at the same place in other frames, back to where
# the current content appeared before), and breaks parts of the model to see what the physics metrics
# lose.  A pattern that a head shows is a description; only an ablation says whether the model uses it.
#
# Run:   python lessons/11_looking_inside_the_video_dit.py   (figures in runs/lessons/11_looking_inside_the_video_dit/)
# Time:  about 20 s on a 2-core CPU with lessons 08 and 09's checkpoints present (measured: 22 s on an
#        idle 2-core machine, both cores in use; 17 s with the 192-wide DiT of today's recipe on a later machine;
#        25 s with the scene-labelled DiT of 2026-12-04 on a 2-core machine with AVX-512 BF16 and no AMX).

# %%
import time

import matplotlib
import torch

from imagediff.hooks import hook_points, hooks, run_with_cache
from toydiff import plots
from videodiff.interp.ablations import (ABLATION_STEPS, ablation_table, format_ablation_table, skip_block,
                                       standard_ablations)
from videodiff.interp.activations import frame_attention
from videodiff.interp.heads import (head_ablation_hooks, head_scores, induction_head_scores, induction_scores,
                                    mean_head_outputs, repeated_frame_clips, top_heads, uniform_attention_scores)
from videodiff.pipeline import held_out_videos

from lesson_setup import QUICK, VIDEO_CONTEXT, shared_video_model, start_lesson  # noqa: E402

OUT = start_lesson("11_looking_inside_the_video_dit")
NUM_CLIPS = 8 if QUICK else 32                          # held-out clips the attention is measured on
LEVEL = 500                                             # the noise level of the frames after the history
LEVELS = [0, 500, 999] if QUICK else [0, 100, 250, 500, 750, 999]   # head scores at these levels
TOP_K = 1 if QUICK else 2                               # heads ablated (the quick model has 2 in all)
NUM_VIDEOS = 4 if QUICK else 16                         # held-out videos rolled out per ablation
SAMPLING_STEPS = ABLATION_STEPS                         # denoising steps per frame (the ablation table's: 2, η = 0)
started = time.perf_counter()


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


# %% [markdown]
# ## A clip with a clean history and a noisy future
# What the model sees in a rollout (lesson 10): K real frames, clean, at level 0, and the frames it is
# making, noisy.  Take held-out clips of one window, keep the first K frames clean and noise the rest
# to t = 500.  The hooks, the cache and the attention maps below show the model's response to these clips.

# %%
run = shared_video_model()
model, schedule = run.model.eval(), run.schedule
window, K = run.window, VIDEO_CONTEXT
N, depth, num_heads = model.config.tokens_per_frame, model.config.depth, model.config.num_heads
x_0 = run.encode(held_out_videos(run.config, NUM_CLIPS, num_frames=window).frames)     # (B, F, C, h, w)
t = torch.full(x_0.shape[:2], LEVEL, dtype=torch.int64)                                # (B, F)
t[:, :K] = 0                                                                           # the history is clean
noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(0))
x_t = schedule.add_noise(x_0, noise, t)                                                # (B, F, C, h, w)
print(f"{NUM_CLIPS} clips of F = {window} frames, {N} tokens per frame (T = {window * N} tokens), depth {depth}, "
      f"{num_heads} heads per block; frames 0-{K - 1} clean, frames {K}-{window - 1} at t = {LEVEL}")

# %% [markdown]
# ## Hook points, and the cache
# Each block has the same sites.  A hook on every site of block 0 that only records what it sees lists
# them in the order a forward pass visits them, with their shapes: B clips, T = F·N tokens (time-major:
# frame 0's N tokens first), D channels, d per head.  `run_with_cache` stores the sites asked for —
# here the residual stream after every block — and indexes them by name or by (kind, layer).

# %%
visited = []
with torch.no_grad(), hooks(model, [(lambda name: name.startswith("blocks.0."),
                                     lambda activation, hook: visited.append((hook.name, tuple(activation.shape))))]):
    model(x_t, t)
print(f"block 0 has {len(visited)} hook points; in the order a forward visits them:")
for name, shape in visited:
    print(f"  {name:32s} {shape}")
with torch.no_grad():
    _, cache = run_with_cache(model, x_t, t, names=["resid_post"])
print(f"cached: {list(cache)}")
print(f"resid_post of block 0: {tuple(cache['resid_post', 0].shape)} (B, T, D); stacked over the blocks: "
      f"{tuple(cache.stack('resid_post').shape)}")
print(f"cache['resid_post', 0] is cache['blocks.0.hook_resid_post']: "
      f"{cache['resid_post', 0] is cache['blocks.0.hook_resid_post']}")

# %% [markdown]
# ## A hook that looks, and a hook that edits
# A hook function gets (activation, hook point).  Returning None leaves the activation alone: the output
# must be the same, bit for bit.  Returning a tensor replaces the activation from there on: zero the
# last block's attention output, and the prediction moves.  The attention pattern is never formed in an
# ordinary forward (a fused kernel computes softmax(q kᵀ/√d) v in one go); caching it takes the explicit
# path, which must agree with the fused one up to float rounding.  Hooks live only inside the `with`.

# %%
last = depth - 1
with torch.no_grad():
    plain = model(x_t, t)
    with hooks(model, [("blocks.0.hook_resid_post", lambda activation, hook: None)]):
        looked = model(x_t, t)
    with hooks(model, [(f"blocks.{last}.hook_attn_out", lambda activation, hook: torch.zeros_like(activation))]):
        edited = model(x_t, t)
    with_pattern, _ = run_with_cache(model, x_t, t, names=["pattern"])
relative_change = ((edited - plain).norm() / plain.norm()).item()
print(f"a hook that returns None: output identical bit for bit: {torch.equal(plain, looked)}")
print(f"a hook that zeroes block {last}'s attention output: relative change of the output {relative_change:.3f}")
print(f"pattern formed explicitly instead of the fused kernel: max |difference| of the output "
      f"{(with_pattern - plain).abs().max().item():.1e}")
print(f"hook points still hooked after the with blocks: {sum(p.is_hooked for p in hook_points(model).values())}")

# %% [markdown]
# ## Attention, frame by frame
# A head's pattern (B, heads, T, T) holds, for every query token, a distribution over the T keys: each
# row sums to 1.  `frame_attention` sums each row over the keys of every frame and averages over the
# query tokens of a frame: (B, heads, F, F), entry [f, g] the attention frame f pays to frame g — still
# rows that sum to 1.  Of interest in a rollout: how much of their attention the noisy frames spend on
# the clean history, next to what attending to every token alike would give (K / F).

# %%
with torch.no_grad():
    _, cache = run_with_cache(model, x_t, t, names=["pattern"])
patterns = cache.stack("pattern")                                                    # (depth, B, heads, T, T)
per_frame = torch.stack([frame_attention(pattern, window) for pattern in patterns])  # (depth, B, heads, F, F)
print(f"token patterns {tuple(patterns.shape)}: rows sum to 1 within {(patterns.sum(-1) - 1).abs().max().item():.1e}; "
      f"frame patterns {tuple(per_frame.shape)}: within {(per_frame.sum(-1) - 1).abs().max().item():.1e}")
maps = per_frame.mean(dim=1)                                                          # (depth, heads, F, F)
on_history = maps[:, :, K:, :K].sum(-1).mean(-1)                                      # (depth, heads)
for layer in range(depth):
    print(f"block {layer}: attention of the noisy frames to the {K} clean ones: "
          + ", ".join(f"{head_name(layer, h)} {on_history[layer, h]:.2f}" for h in range(num_heads))
          + f" (uniform attention: {K / window:.2f})")
figure, axes = plots.new_figure(depth * num_heads, panel_size=max(2.2, 6.0 / num_heads), rows=depth)
for index, axis in enumerate(axes):
    layer, head = divmod(index, num_heads)
    image = axis.imshow(maps[layer, head].numpy(), vmin=0, vmax=maps.max().item(), cmap="viridis")
    axis.set_title(head_name(layer, head), fontsize=8)
    axis.set_xticks(range(window))
    axis.set_yticks(range(window))
    axis.tick_params(labelsize=6)
figure.colorbar(image, ax=axes, label="attention, query frame (row) to key frame")
figure.suptitle(f"Attention per frame, {NUM_CLIPS} clips: frames 0-{K - 1} clean, the rest at t = {LEVEL}", fontsize=9)
print("wrote", plots.save_figure(figure, OUT / "attention_per_frame.png"))

# %% [markdown]
# ## Scores of every head, across noise levels
# A few numbers summarise a head's patterns (`videodiff.interp.heads`), each an attention mass in
# [0, 1] averaged over queries and clips, and each worth reading only next to its chance level (a
# head that attends to every token alike):
# - previous frame: the attention frame f pays to frame f - 1 (chance 1 / F);
# - spatial alignment: the attention a token pays to the tokens at its own (row, column) in the other
#   frames (chance (F - 1) / (F·N)): following a ball that stays put, or the box's walls;
# - induction: on clips that show F/2 unrelated frames and then the same F/2 again, the attention a
#   second-half frame pays to the frame that followed its content the first time (chance 1 / F).
# Here every frame of the clip is at the same level, swept from clean to pure noise: what a head does
# may depend on how much of the picture is left to see.

# %%
scores = head_scores(model, x_0, schedule, LEVELS)                                   # each (levels, depth, heads)
chance = uniform_attention_scores(window, N)
for kind in ("previous_frame", "spatial_alignment"):
    for index, level in enumerate(LEVELS):
        values = scores[kind][index]                                                 # (depth, heads)
        print(f"{kind} at level {level:3d}: "
              + " ".join(f"{head_name(l, h)} {values[l, h]:.3f}" for l in range(depth) for h in range(num_heads))
              + f" (chance {chance[kind]:.3f})")

# %% [markdown]
# ## Induction, and why it needs a control
# On a repeated clip the frame that followed a content's first showing is always F/2 - 1 frames back.
# So a head that merely looks a fixed F/2 - 1 frames back, whatever is there, gets the full induction
# score without matching any content.  The control shows the second half shuffled so that no frame
# keeps its place; the successor is then never F/2 - 1 frames back.  The library's scores of such a
# fixed-offset head, built by hand, show it: all of it on repeated clips, none on the control.  A head
# that really looks up content scores alike on both.

# %%
pool = x_0[:, window // 2]                                                           # (B, C, h, w): unrelated frames
offset = window // 2 - 1
looks_back = torch.zeros(NUM_CLIPS, 1, window, window)                               # (B, 1 head, F, F)
for frame in range(window):
    looks_back[:, 0, frame, max(frame - offset, 0)] = 1.0
fixed_offset = {}
for permuted in (False, True):
    _, source = repeated_frame_clips(pool, NUM_CLIPS, window, permuted=permuted)     # (B, F) pool index per frame
    fixed_offset[permuted] = induction_scores(looks_back, source).item()
print(f"a head that always looks {offset} frame(s) back: induction score {fixed_offset[False]:.2f} on repeated "
      f"clips, {fixed_offset[True]:.2f} on the control")
induction = induction_head_scores(model, pool, schedule, LEVELS, num_clips=NUM_CLIPS)
for kind in ("induction", "induction_permuted"):
    for index, level in enumerate(LEVELS):
        values = induction[kind][index]
        print(f"{kind} at level {level:3d}: "
              + " ".join(f"{head_name(l, h)} {values[l, h]:.3f}" for l in range(depth) for h in range(num_heads))
              + f" (chance {chance['induction']:.3f})")

# %%
panels = {"previous frame": (scores["previous_frame"], chance["previous_frame"]),
          "spatial alignment": (scores["spatial_alignment"], chance["spatial_alignment"]),
          "induction (repeated clips)": (induction["induction"], chance["induction"]),
          "induction (control: shuffled)": (induction["induction_permuted"], chance["induction"])}
colours = matplotlib.colormaps["tab20"]                                               # 20 colours: one per head
line_styles = ["-", "--", ":", "-."]                                                 # and one style per block
figure, axes = plots.new_figure(len(panels), panel_size=3.2, square=False)
for axis, (title, (values, level_of_chance)) in zip(axes, panels.items()):
    for layer in range(depth):
        for head in range(num_heads):
            axis.plot(LEVELS, values[:, layer, head], marker="o", markersize=3, color=colours(layer * num_heads + head),
                      linestyle=line_styles[layer % 4], label=head_name(layer, head))
    axis.axhline(level_of_chance, color="0.4", linestyle="--", linewidth=1, label="chance")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("noise level of every frame")
    axis.set_ylim(0, 1)
axes[0].set_ylabel("attention mass")
figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=6)
figure.suptitle(f"Head scores over noise levels, {NUM_CLIPS} held-out clips of {window} frames", fontsize=9)
print("wrote", plots.save_figure(figure, OUT / "head_scores.png"))

# %% [markdown]
# ## The heads to ablate
# The heads with the highest previous-frame score, averaged over the levels, are the candidates: a
# video model that continues motion plausibly has reason to look at the frame before.  Two ways to
# remove a head, both on its output z before the output projection mixes the heads: *zero* it (the
# block loses the head's term altogether), or replace it by its *mean* over clips and tokens (the head
# still adds what it adds on average, but no longer anything that depends on the input — the gentler
# test).  The means are taken at levels like a rollout's: history clean, other frames at random levels.
# Skipping a block is done the same way, by hooks: its attention and MLP outputs are zeroed, so its
# output is its input, exactly.

# %%
top = top_heads(scores["previous_frame"].mean(axis=0), TOP_K)                        # [(layer, head), ...]
average = scores["previous_frame"].mean(axis=0)
print(f"top {TOP_K} previous-frame head(s), averaged over levels: "
      + ", ".join(f"{head_name(*pair)} {average[pair]:.3f}" for pair in top)
      + f" (chance {chance['previous_frame']:.3f})")
rollout_levels = torch.randint(0, schedule.num_timesteps, x_0.shape[:2], generator=torch.Generator().manual_seed(1))
rollout_levels[:, :K] = 0
x_rollout = schedule.add_noise(x_0, noise, rollout_levels)
means = mean_head_outputs(model, x_rollout, rollout_levels, top)                     # {(layer, head): (d,)}
with torch.no_grad():
    changes = {}
    for mode in ("zero", "mean"):
        with hooks(model, head_ablation_hooks(top, mode, means if mode == "mean" else None)):
            changes[mode] = ((model(x_t, t) - plain).norm() / plain.norm()).item()
    with hooks(model, skip_block(model, 0)):
        _, skipped = run_with_cache(model, x_t, t, names=["resid_pre", "resid_post"], layers=[0])
print(f"relative change of the output, heads {', '.join(head_name(*pair) for pair in top)}: zero-ablated "
      f"{changes['zero']:.3f}, mean-ablated {changes['mean']:.3f}")
print(f"skip_block(0): block 0's resid_post equals its resid_pre exactly: "
      f"{torch.equal(skipped['resid_post', 0], skipped['resid_pre', 0])}")

# %% [markdown]
# ## What each ablation breaks
# Roll the same held-out videos out under each ablation (same seed, same videos: rows differ only by
# what was broken) and score them with lesson 08's tracker, as in lesson 10.  Two rows are floors
# rather than ablations: *skip the DiT* copies the last real frame (a frozen video: motion ratio 0), and
# *one denoising step* asks how much of the result comes from iterating.  The others break one thing:
# the adaLN modulation averaged over frames (the blocks can no longer tell the clean history from the
# noisy frames), the noise level fixed for every frame, a block skipped, noise injected into a block's
# output at every step (h + α·std(h)·ε), and the top heads zero- and mean-ablated.

# %%
length = 2 * window
ablations = standard_ablations(model, heads=top, head_means=means)
table = ablation_table(run, ablations, num_videos=NUM_VIDEOS, context=K, length=length, num_steps=SAMPLING_STEPS)
print(f"{NUM_VIDEOS} held-out videos, {K} real frames then {length} generated, {SAMPLING_STEPS} steps per frame; "
      f"position errors in px, shares in [0, 1]:")
print(format_ablation_table(table))

# %% [markdown]
# ## Reading the table
# What the rows say is computed from them here, not written in advance: with a model this small and
# this briefly trained, which parts matter is a measurement, and it may change with the next training
# run.  Read two columns together: the position error is taken over the balls the tracker *found*, so
# a rollout that loses most of its balls can score a small error; the share of well-formed frames (every
# ball found, none extra, each of the right size and shape) counts the lost ones.

# %%
rows = {row["ablation"]: row for row in table}
plain_row, frozen_row = table[0], table[1]


def px(value) -> str:
    return "-" if value is None else f"{value:.2f} px"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


print(f"motion ratio: the model as trained {ratio(plain_row['motion_ratio'])}, skip the DiT "
      f"{ratio(frozen_row['motion_ratio'])}")
scored = [row for row in table[2:] if row["position_error"] is not None]
if plain_row["position_error"] is not None and scored:
    worst = max(scored, key=lambda row: row["position_error"])
    print(f"largest position error of the ablations: {worst['ablation']} ({px(worst['position_error'])}, against "
          f"{px(plain_row['position_error'])} for the model as trained)")
    worse = [row["ablation"] for row in scored if row["position_error"] > plain_row["position_error"]]
    print(f"ablations with a larger position error than the model as trained: {len(worse)} of {len(table) - 2}")
fewest = min(table[2:], key=lambda row: row["well_formed_share"])
print(f"fewest well-formed frames: {fewest['ablation']} ({fewest['well_formed_share']:.2f}, against "
      f"{plain_row['well_formed_share']:.2f} for the model as trained)")
for mode in ("zero", "mean"):
    row = next(row for name, row in rows.items() if name.startswith(f"{mode} heads"))
    print(f"{row['ablation']}: position error {px(row['position_error'])}, motion ratio {ratio(row['motion_ratio'])} "
          f"(the model as trained: {px(plain_row['position_error'])}, {ratio(plain_row['motion_ratio'])})")

# %% [markdown]
# ## What to remember
# - Hook points are identities until a hook is attached; a hook that returns None changes nothing, bit
#   for bit, and one that returns a tensor edits the model from that site on.  `run_with_cache` keeps
#   only the sites asked for, by name or (kind, layer).
# - Attention summed into frames says where each frame looks in time; a score means something only
#   next to its chance level, and an induction-like score only next to its shuffled control.
# - A head's pattern describes; an ablation tests.  Zeroing removes a head's whole term, mean-ablation
#   only what depends on the input; compare both with the unablated row and with the floors.
# - Exercise: `python -m lessons.exercises.check 11` — write a head's zero-ablation hook and the sum of a
#   token pattern into frames.

# %%
print(f"lesson 11 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
