# %% [markdown]
# # Lesson 06 — Latent diffusion with a DiT
#
# Lesson 05 built a VAE that turns a 3 x 32 x 32 image into a 4 x 8 x 8 latent and back.  Here a
# diffusion model learns the distribution of those latents, conditioned on the class: the same
# schedule, objective (v-prediction), training loop and DDIM sampler as the spiral of lessons 02-04,
# applied to tensors (4, 8, 8) instead of points (2,).  Only the denoiser is new: a Diffusion
# Transformer (DiT, Peebles & Xie 2023), which reads the latent as a sequence of patches and is told
# the noise level and the class through adaptive LayerNorm.  At the end the same DiT is trained on
# pixels for the same wall time, to measure what the latent space buys.
#
# Run:   python lessons/06_latent_diffusion_with_a_dit.py   (figures in runs/lessons/06_latent_diffusion_with_a_dit/)
# Time:  about 7 min on a 2-core CPU the first time, with lesson 05's VAE and grader present
#        (measured: 440 s: the latent DiT about 240 s of compiled training plus its snapshots, the
#        pixel DiT its equal share of at most 2 min, which it trains every time); about 4 min (260 s)
#        once the latent DiT is trained.
#        Measured with `python lessons/run_all.py 06 07` on an idle 2-core machine, both cores in use
#        (a full-mode run: 0.94 of the samples the class asked for at step 1800, CFG s = 3). On a CPU
#        with native bf16 products (AMX), where the DiT trains under bf16 autocast: 180 s the first
#        time (the latent DiT 57 s of training; 0.905 at step 1800). The same machine with its bf16
#        products hidden from the recipe (`auto` resolving to fp32, as on a CPU without them): 337 s
#        (0.917 at step 1800; `python lessons/run_all.py 05 06 07 08 09 10`, idle, 2 cores).
#
# The latent DiT trained here is shared with lesson 07: it is trained once.

# %%
import time
from dataclasses import replace

import torch

from imagediff.bench import dit_training_rate
from imagediff.data import make_dataset
from imagediff.dit import patchify, training_flops, unpatchify
from imagediff.evaluation import balanced_request
from imagediff.pipeline import build_dit, encode_images, load_image_diffusion, train_image_diffusion
from imagediff.plots import save_curves, save_labelled_rows
from toydiff.losses import DiffusionObjective
from toydiff.schedules import make_schedule

from lesson_setup import (DATASET_OPTIONS, IMAGE_SIZE, LATENT, PROMPTS, QUICK, finished,  # noqa: E402
                          latent_recipe, shared_grader, shared_vae, start_lesson)

OUT = start_lesson("06_latent_diffusion_with_a_dit")
GUIDANCE = 3.0                           # the classifier-free guidance scale of every sample drawn here
PER_CLASS = 8 if QUICK else 2            # samples per class at each evaluation during training
SAMPLING_STEPS = 10 if QUICK else 15     # DDIM steps of those samples (enough to follow progress)
EVALUATE_EVERY = 50 if QUICK else 300    # training steps between evaluations (a multiple of log_every)
PIXEL_BUDGET_CAP = 120.0                 # seconds: the pixel DiT's budget is the latent DiT's time, at most this
started = time.perf_counter()

# %% [markdown]
# ## What we start from
# The VAE of lesson 05 and its grader (each trained now if it is missing): the evaluation
# classifier, a small CNN trained on *real pixels* of other seeds than the generators saw.  It is
# never used to steer sampling, only to measure it: the share of samples it assigns to the class
# that was asked for (accuracy), and the Fréchet distance between its features of samples and of
# real images.  Both are printed next to what real held-out images score: accuracy on real images
# is the ceiling, the Fréchet distance between two independent sets of real images of the same
# size is the floor.

# %%
vae = shared_vae().vae
images = make_dataset("shapes", 8, seed=300, image_size=IMAGE_SIZE, **DATASET_OPTIONS)
num_classes = images.num_classes
grader = shared_grader(num_images=num_classes * PER_CLASS)
print(f"real held-out images: accuracy {grader.reference['accuracy']:.3f} (the ceiling); Fréchet distance between "
      f"two sets of {num_classes * PER_CLASS} real images {grader.reference['frechet_distance']:.2f} (the floor)")

# %% [markdown]
# ## Patchify: a latent becomes a sequence of tokens
# A transformer reads a sequence.  The DiT cuts the latent (C, H, W) into non-overlapping p x p
# patches, row by row, and flattens each into one token of p·p·C numbers, ordered (row in patch,
# column in patch, channel).  `unpatchify` is its exact inverse: the model's output tokens become a
# latent again.  Below, p = 2, and channel 0 of each token is drawn in the token order.

# %%
z = encode_images(vae, images.images[:1])                              # (1, C, H, W) scaled latent
_, C, H, W = z.shape
p = 2
tokens = patchify(z, p)                                                # (1, N, p·p·C)
N = tokens.shape[1]
print(f"latent {tuple(z.shape)} -> tokens {tuple(tokens.shape)}: {N} tokens of {p}·{p}·{C} = {p * p * C} numbers")
print(f"unpatchify(patchify(z)) == z exactly: {torch.equal(unpatchify(tokens, p, H, W, C), z)}")
patches = tokens[0].view(N, p, p, C)                                   # (N, row, column, channel)
print("wrote", save_labelled_rows(
    [images.images[:1], z[:, :1] / 3, patches[..., 0].unsqueeze(1) / 3],
    ["image", "latent,\nchannel 0", f"its {N} tokens,\nchannel 0"], OUT / "patchify.png",
    f"Patchify: a {C}x{H}x{W} latent becomes {N} tokens of {p}x{p}x{C} numbers, read row by row"))
recipe = latent_recipe()
model_p = recipe.dit.patch_size
print(f"the DiT of this lesson uses p = {model_p}: {(H // model_p) * (W // model_p)} tokens per latent")

# %% [markdown]
# ## The DiT, and how it is told t and the label
# Each token is embedded (a Linear) and gets a fixed 2-D sine-cosine position.  The condition is one
# vector per example, c = emb(t) + emb(label), where a reserved extra label means "no label" (for
# classifier-free guidance).  c enters every block through adaptive LayerNorm with a gate:
#
#     shift, scale, gate (x2) = Linear(SiLU(c))
#     x = x + gate_attn · Attention(LayerNorm(x) · (1 + scale_attn) + shift_attn)
#     x = x + gate_mlp  · MLP(LayerNorm(x) · (1 + scale_mlp) + shift_mlp)
#
# "Zero": that Linear starts at zero, so every gate is 0 and every block starts as the identity; the
# final projection starts at zero too, so the untrained model outputs exactly 0.  Measured:

# %%
torch.manual_seed(0)
model = build_dit(latent_recipe(), (C, H, W), num_classes)
schedule = make_schedule(recipe.schedule, recipe.num_timesteps)
x0 = encode_images(vae, images.images)                                 # (8, C, H, W)
t = torch.linspace(0, schedule.num_timesteps - 1, len(x0)).long()     # (8,) int64
x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), t)
print(f"DiT: {sum(q.numel() for q in model.parameters()):,} parameters, {model.config.num_tokens} tokens of width "
      f"{model.config.hidden_dim}, {model.config.depth} blocks of {model.config.num_heads} heads; "
      f"{training_flops(model.config, recipe.train.batch_size) / 1e9:.1f} GFLOP per training step")
with torch.no_grad():
    x = model.embed_patches(x_t)                                       # (8, N, D)
    c = model.embed_condition(t, images.labels)                        # (8, D)
    for index, block in enumerate(model.blocks):
        gates = block.adaln_modulation(c).chunk(6, dim=-1)             # shift, scale, gate for attention and MLP
        after = block(x, c)                                            # (8, N, D)
        print(f"block {index}: max |gate| = {max(g.abs().max().item() for g in gates[2::3]):.1f}, "
              f"max |block(x) - x| = {(after - x).abs().max().item():.1f} (the identity)")
        x = after
    print(f"model output: max |output| = {model(x_t, t, images.labels).abs().max().item():.1f}")

# %% [markdown]
# Does anything learn, if everything starts at zero?  The first gradient reaches only the final
# projection (its input, the features, is not zero); once one step has moved it, the gradient flows
# back into the gates and modulations, and from there into every block.

# %%
objective = DiffusionObjective(schedule, recipe.prediction_type)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
watched = {"final projection": model.final_layer.linear.weight,
           "block 0 adaLN (gates)": model.blocks[0].adaln_modulation[-1].weight,
           "block 0 attention": model.blocks[0].attention.qkv.weight}
for step in (1, 2, 3):
    loss, _ = objective(model, (x0, images.labels), torch.Generator().manual_seed(step))
    optimizer.zero_grad()
    loss.backward()
    norms = ", ".join(f"{name} {weight.grad.norm().item():.2e}" for name, weight in watched.items())
    print(f"step {step}: gradient norms {norms}")
    optimizer.step()

# %% [markdown]
# ## Training the latent DiT
# `train_image_diffusion` encodes the training images once with the VAE (scaled latents, never
# clipped) and runs toydiff's training loop with toydiff's objective, dropping the label to the null
# label 10% of the time.  Its `evaluate` hook is called every few hundred steps with the EMA weights;
# ours draws a few samples per class at CFG s = 3 (always from the same noise, so one can watch the
# same samples form) and grades them.  The time spent in the hook is not counted as training time.
# What the hook returns is kept in the run's history, and so in its checkpoint: the figures below
# are redrawn from it when the trained model is reused.
#
# One thing in the recipe is particular to this data set.  Every shape is drawn at a random angle,
# and the generator records it; the recipe (`canonical_frame`, on for the shapes) trains the DiT on
# the same draws *upright*, and `sample` turns each decoded image by an angle drawn from the data's.
# The DiT then has one orientation of each shape to learn instead of all of them.  Lesson 07 measures
# what that buys, against the same recipe learning every angle.

# %%
def snapshot(run, step) -> dict:
    """Draw PER_CLASS samples of every class, grade them, and keep one image per prompt."""
    labels = balanced_request(len(run.class_names), PER_CLASS)        # (K·PER_CLASS,)
    # Plain guidance: the sampler's default also rescales it above s = 1 (lesson 07 shows what that changes).
    drawn = run.sample(labels=labels, guidance_scale=GUIDANCE, rescale=0.0, num_steps=SAMPLING_STEPS, seed=0)
    picks = [int(torch.nonzero(labels == run.class_index(prompt))[0, 0]) for prompt in PROMPTS]
    return {**grader.score(drawn, labels), "images": drawn[picks].clamp(-1, 1)}


print(f"recipe: {recipe.num_train_images} images, {recipe.schedule} schedule, T = {recipe.num_timesteps}, "
      f"target {recipe.prediction_type}, label dropout {recipe.label_dropout}; {recipe.train.steps} steps of batch "
      f"{recipe.train.batch_size}, learning rate {recipe.train.learning_rate}")
checkpoint = LATENT / "checkpoint.pt"
run = load_image_diffusion(checkpoint) if finished(checkpoint, recipe.train.steps, recipe) else None
if run is None or not any("evaluation" in entry for entry in run.history):
    if run is not None:
        print("the checkpoint was trained without this lesson's snapshots (by lesson 07): training it again")
    run = train_image_diffusion(recipe, out_dir=LATENT, vae=vae, evaluate=snapshot, evaluate_every=EVALUATE_EVERY,
                                resume=run is None)
else:
    print(f"loaded the trained latent DiT from {checkpoint}")
latent_history = [entry for entry in run.history if "evaluation" in entry]
print(f"{'step':>6} {'seconds':>8} {'loss':>7}   accuracy   Fréchet distance   (CFG s = {GUIDANCE:g}, "
      f"{SAMPLING_STEPS} DDIM steps)")
for entry in latent_history:
    print(f"{entry['step']:6d} {entry['seconds']:8.0f} {entry['loss']:7.4f}   {entry['evaluation']['accuracy']:8.3f}"
          f"   {entry['evaluation']['frechet_distance']:16.2f}")
print(f"{'real images':>31}   {grader.reference['accuracy']:8.3f}   {grader.reference['frechet_distance']:16.2f}")

# %%
shown = sorted({round(i) for i in torch.linspace(0, len(latent_history) - 1, min(6, len(latent_history))).tolist()})
print("wrote", save_labelled_rows(
    [latent_history[i]["evaluation"]["images"] for i in shown],
    [f"step {latent_history[i]['step']}\n{latent_history[i]['seconds']:.0f} s" for i in shown],
    OUT / "samples_over_training.png",
    f"Latent DiT samples over training (CFG s = {GUIDANCE:g}, the same noise in every row)"))
print(f"columns: {', '.join(PROMPTS)}")

# %% [markdown]
# ## The trained model uses t and the label
# After training, the gates are no longer zero, and they depend on the noise level: adaptive
# LayerNorm lets one set of weights behave differently at t = 50 and t = 950.  The output changes
# with t (docs/pitfalls.md, pitfall 14: a model that ignored t could not denoise) and with the label.

# %%
with torch.no_grad():
    trained, labels = run.model, images.labels
    for t_value in (50, schedule.num_timesteps - 50):
        c = trained.embed_condition(torch.full((len(x0),), t_value), labels)            # (8, D)
        gates = [block.adaln_modulation(c).chunk(6, dim=-1) for block in trained.blocks]
        print(f"t = {t_value:3d}: mean |gate| of attention, MLP per block: "
              + "  ".join(f"{g[2].abs().mean():.3f}, {g[5].abs().mean():.3f}" for g in gates))
    middle = torch.full((len(x0),), schedule.num_timesteps // 2)
    output = trained(x_t, middle, labels)
    other_t = trained(x_t, middle + 200, labels)
    no_label = trained(x_t, middle, None)
    print(f"relative change of the output: t + 200: {(other_t - output).norm() / output.norm():.2f};  "
          f"null label instead of the class: {(no_label - output).norm() / output.norm():.2f}")

# %% [markdown]
# ## The same DiT on pixels, for the same time
# Now the same DiT (same width, depth and patch size) denoises the images themselves, 3 x 32 x 32:
# 16 times as many tokens, so each step costs about 20 times the FLOPs (lesson 05).  What that means
# in seconds depends on the machine: both are measured here, a few training steps each, the same
# way, and the latent step once more in fp32: on a CPU with native bf16 products (AMX) the recipe's
# bf16 step takes about half the time, because a 16-token step is mostly matrix products.  The pixel
# model then trains for the same wall time the latent model had (at most two minutes), and is graded
# the same way.  (Its warm-up is shortened to a tenth of its steps.)

# %%
pixel_recipe = replace(latent_recipe(), space="pixel")
latent_rate = dit_training_rate(latent_recipe(), (C, H, W), num_classes, repeats=3)
pixel_rate = dit_training_rate(pixel_recipe, (3, IMAGE_SIZE, IMAGE_SIZE), num_classes, repeats=1)
for name, rate in (("latent", latent_rate), ("pixel", pixel_rate)):
    print(f"{name:6s} DiT: {rate['tokens']:4d} tokens, {rate['step_seconds']:.3f} s per training step of batch "
          f"{rate['batch_size']} ({rate['step_flops'] / 1e9:.1f} GFLOP, {rate['flop_rate'] / 1e9:.1f} GFLOP/s)")
print(f"a pixel step takes {pixel_rate['step_seconds'] / latent_rate['step_seconds']:.0f}x as long as a latent step")
# The recipe trains under bf16 autocast where the machine's bf16 products are native (mixed precision
# "auto": a GPU, or a CPU with AMX or AVX-512 BF16). The same latent step in fp32, for comparison:
fp32_rate = dit_training_rate(latent_recipe(), (C, H, W), num_classes, repeats=3, precision="no")
print(f"latent step here: {'bf16 autocast' if latent_rate['precision'] == 'bf16' else 'fp32'}, "
      f"{latent_rate['step_seconds']:.3f} s; in fp32 {fp32_rate['step_seconds']:.3f} s "
      f"({fp32_rate['flop_rate'] / fp32_rate['matmul_rate']:.0%} of this machine's fp32 matmul rate)")
budget = min(latent_history[-1]["seconds"], PIXEL_BUDGET_CAP)
log_every = max(1, int(budget / pixel_rate["step_seconds"]) // 3)
pixel_recipe.train = replace(recipe.train, steps=3 * log_every, log_every=log_every, checkpoint_every=0,
                             warmup_steps=max(1, 3 * log_every // 10))
print(f"budget: {budget:.0f} s of training -> {pixel_recipe.train.steps} pixel steps "
      f"(the latent DiT made {max(e['step'] for e in run.history if e['seconds'] <= budget * 1.05)} in that time)")
pixel = train_image_diffusion(pixel_recipe, evaluate=snapshot, evaluate_every=log_every)
pixel_history = [entry for entry in pixel.history if "evaluation" in entry]

# %%
# Compare at the time the pixel DiT really trained (its step time can differ from the estimate above).
pixel_at_end = pixel_history[-1]
reached = [entry for entry in latent_history if entry["seconds"] <= pixel_at_end["seconds"] * 1.05] or latent_history[:1]
latent_at_budget = reached[-1]
for name, entry in (("latent DiT", latent_at_budget), ("pixel DiT", pixel_at_end)):
    print(f"{name:10s} after {entry['seconds']:5.0f} s ({entry['step']:5d} steps): accuracy "
          f"{entry['evaluation']['accuracy']:.3f}, Fréchet distance {entry['evaluation']['frechet_distance']:.2f}")
print(f"{'real images':38s}: accuracy {grader.reference['accuracy']:.3f}, Fréchet distance "
      f"{grader.reference['frechet_distance']:.2f}")
curves = {name: ([e["seconds"] for e in history], [e["evaluation"]["accuracy"] for e in history])
          for name, history in (("latent DiT", latent_history), ("pixel DiT, same size", pixel_history))}
print("wrote", save_curves(curves, OUT / "latent_vs_pixel.png", "training time (s)",
                           f"accuracy at CFG s = {GUIDANCE:g}", "Latent vs pixel diffusion, same DiT, by training time",
                           reference=grader.reference["accuracy"]))
print("wrote", save_labelled_rows(
    [latent_at_budget["evaluation"]["images"], pixel_at_end["evaluation"]["images"]],
    [f"latent DiT\n{latent_at_budget['seconds']:.0f} s", f"pixel DiT\n{pixel_at_end['seconds']:.0f} s"],
    OUT / "latent_vs_pixel_samples.png",
    f"After the same training time: latent DiT against pixel DiT (CFG s = {GUIDANCE:g}, same noise)"))

# %% [markdown]
# ## What to remember
# - A DiT is a plain transformer over patches; the noise level and the class reach it only through
#   adaptive LayerNorm, whose zero-initialised gates make every block start as the identity.
# - Nothing in the diffusion changed from the spiral: schedule, objective, loop and sampler are
#   toydiff's.  What changed is what is diffused — scaled VAE latents.
# - In the latent space the same network is many times cheaper per step, so within the same time it
#   gets many times more steps: that, not a cleverer network, is why latent diffusion wins here.
# - Exercise: `python -m lessons.exercises.check 06` — write patchify, unpatchify and modulate.

# %%
print(f"lesson 06 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
