# %% [markdown]
# # Lesson 05 — Images as data, and the VAE that compresses them
#
# The spiral had two numbers per sample.  An image has thousands, and the diffusion of lessons 01-04
# works on them unchanged: x_0 is now a tensor (3, H, W) instead of a point (2,), and the noise has
# the same shape.  But every denoising step then runs a network over every pixel, and most of what
# it must learn about pixels (crisp edges, flat colours) has nothing to do with *what* the image
# shows.  Latent diffusion (Rombach et al. 2022) splits the work: an autoencoder compresses images
# into a small latent once, and diffusion learns the distribution of the latents.  This lesson
# builds that autoencoder — a VAE — and looks at its latents; lesson 06 diffuses them.
#
# Run:   python lessons/05_images_and_the_vae.py      (figures in runs/lessons/05_images_and_the_vae/)
# Time:  about 4.5 min on a 2-core CPU the first time (measured: 251 s: the VAE 101 s of training,
#        the grader 139 s), about 5 s once runs/lessons/vae/ and runs/lessons/evaluation/ hold their
#        checkpoints.
#        Measured with `make lessons` on an idle 2-core machine, both cores in use.
#
# The VAE and the grader trained here are shared by lessons 06 and 07: each is trained once.

# %%
import time

import torch
import torch.nn.functional as F

from imagediff.data import make_dataset
from imagediff.dit import DiTConfig, training_flops
from imagediff.metrics import psnr, summarise_psnr
from imagediff.pipeline import decode_latents, encode_images, load_vae, train_vae
from imagediff.plots import save_curves, save_image_grid, save_labelled_rows
from toydiff.schedules import make_schedule

from lesson_setup import (DATASET_OPTIONS, IMAGE_SIZE, QUICK, VAE, finished, latent_recipe,  # noqa: E402
                          shared_grader, start_lesson, vae_recipe)

OUT = start_lesson("05_images_and_the_vae")
NUM_HELD_OUT = 200 if QUICK else 1000
started = time.perf_counter()

# %% [markdown]
# ## Images are tensors
# The data set is generated, not downloaded: one coloured shape on black per image, at a random
# position, size and rotation.  Each (colour, shape) pair is a class whose name, "red circle", is
# the prompt of lesson 07.  Pixels are in [-1, 1], not [0, 1]: the forward process mixes x_0 with
# unit-variance noise, and a signal centred on 0 with a comparable spread is what schedules assume.

# %%
data = make_dataset("shapes", 2000, seed=0, image_size=IMAGE_SIZE, **DATASET_OPTIONS)
print(f"images {tuple(data.images.shape)} {data.images.dtype}, values in [{data.images.min():.0f}, "
      f"{data.images.max():.0f}]; labels {tuple(data.labels.shape)}; {data.num_classes} classes, "
      f"e.g. {', '.join(repr(name) for name in data.class_names[:3])}")
per_class = max(1, 16 // data.num_classes)                           # 1 of each of 42 classes; 4 of each of 4
of_each_class = torch.cat([torch.nonzero(data.labels == k)[:per_class, 0] for k in range(data.num_classes)])
first_of_each_class = of_each_class[::per_class]
num_colours = len({name.split()[0] for name in data.class_names})
print("wrote", save_image_grid(data.images[of_each_class], OUT / "classes.png", columns=num_colours * per_class,
                               title=f"The shapes data, {data.num_classes} classes (a row per shape)"))

# %% [markdown]
# ## Why pixels are expensive
# A diffusion model runs its network once per sampling step, on the whole sample.  The DiT of lesson
# 06 cuts its input into p x p patches, one token each, and a transformer's cost grows with the
# number of tokens N (weights: ∝ N, attention: ∝ N²).  `training_flops` counts the FLOPs of one
# training step of the same DiT on pixels and on the VAE's latents (a factor f = 4 smaller per side,
# with 4 channels instead of 3).

# %%
dit = latent_recipe().dit
factor = vae_recipe().vae.downsampling_factor
latent_size = IMAGE_SIZE // factor
on_pixels = DiTConfig(**{**dit.__dict__, "in_channels": 3, "input_size": IMAGE_SIZE})
on_latents = DiTConfig(**{**dit.__dict__, "in_channels": 4, "input_size": latent_size})
print(f"one image: 3 x {IMAGE_SIZE} x {IMAGE_SIZE} = {3 * IMAGE_SIZE**2} numbers; its latent: 4 x {latent_size} x "
      f"{latent_size} = {4 * latent_size**2} ({3 * IMAGE_SIZE**2 / (4 * latent_size**2):.0f}x fewer)")
for name, config in (("pixels", on_pixels), ("latents", on_latents)):
    print(f"DiT on {name:7s} (patch {config.patch_size}): {config.num_tokens:4d} tokens, "
          f"{training_flops(config, 128) / 1e9:7.1f} GFLOP per training step of batch 128")
print(f"the pixel model costs {training_flops(on_pixels, 128) / training_flops(on_latents, 128):.0f}x more per step")

# %% [markdown]
# ## The VAE
# The encoder is a small convolutional network: images (B, 3, H, W) -> (B, 8, H/4, W/4), read as the
# mean and log-variance of a Gaussian q(z | x) over latents z of shape (B, 4, H/4, W/4).  The decoder
# maps a latent back to pixels.  Training decodes a *sample* z ~ q(z | x) and minimises
#
#     loss = ‖decoder(z) - x‖² (per pixel value) + kl_weight · KL(q(z | x) ‖ N(0, I)) (per pixel value)
#
# The KL weight is tiny (1e-4): this is a compressor with a regulariser, not a generative model.  The
# regulariser keeps the latents at a bounded scale and teaches the decoder to tolerate small errors
# in z — both matter once a diffusion sampler, not the encoder, produces the latents.
#
# The recipe (`lesson_setup.vae_recipe`) is the library's `VAERunConfig()`; lessons 06 and 07 load
# the same checkpoint.  Training uses toydiff's loop (AdamW, EMA, checkpoints), with the VAE loss as
# its objective; running the lesson again reuses the finished checkpoint.

# %%
recipe = vae_recipe()
print(f"VAE: base width {recipe.vae.base_channels}, channel multipliers {recipe.vae.channel_multipliers}, "
      f"{recipe.vae.latent_channels} latent channels, downsampling factor {recipe.vae.downsampling_factor}, "
      f"KL weight {recipe.vae.kl_weight}")
print(f"training: {recipe.num_train_images} images, {recipe.train.steps} steps of batch {recipe.train.batch_size}, "
      f"learning rate {recipe.train.learning_rate}")
checkpoint = VAE / "checkpoint.pt"
if finished(checkpoint, recipe.train.steps, recipe):
    trained = load_vae(checkpoint)
    print(f"loaded the trained VAE from {checkpoint}")
else:
    trained = train_vae(recipe, out_dir=VAE)
    print(f"trained the VAE in {trained.seconds:.0f} s -> {checkpoint}")
vae = trained.vae  # EMA weights, eval mode
print(f"final training loss {trained.history[-1]['loss']:.4f} (MSE per pixel value + the KL term); "
      f"{sum(p.numel() for p in vae.parameters()):,} parameters")

# %% [markdown]
# ## Reconstructions of images it never saw
# PSNR = 10 log10(range² / MSE), in dB, on held-out images (a seed the VAE never trained on).  The
# floor a learned compressor must beat: shrinking the image by the same factor f with an average
# (keeping (H/f)·(W/f)·3 numbers, a little fewer than the latent's ·4) and enlarging it again.

# %%
held_out = make_dataset("shapes", NUM_HELD_OUT, seed=300, image_size=IMAGE_SIZE, **DATASET_OPTIONS)
latents = encode_images(vae, held_out.images)                          # (N, 4, H/f, W/f), scaled
reconstructions = decode_latents(vae, latents)                         # (N, 3, H, W)
resized = F.interpolate(F.avg_pool2d(held_out.images, factor), scale_factor=factor, mode="bilinear")
vae_psnr, resize_psnr = psnr(reconstructions, held_out.images), psnr(resized, held_out.images)
train_psnr = psnr(decode_latents(vae, encode_images(vae, data.images[:NUM_HELD_OUT])), data.images[:NUM_HELD_OUT])
print(f"VAE, held-out images:      {summarise_psnr(vae_psnr)}")
print(f"VAE, training images:      {summarise_psnr(train_psnr)}   (about the same: no overfitting)")
print(f"floor, resize by {factor} and back: {summarise_psnr(resize_psnr)}")
print("wrote", save_labelled_rows(
    [held_out.images[:10], reconstructions[:10], resized[:10]],
    ["held-out\nimages", "VAE", f"resized\n÷{factor}, ×{factor}"], OUT / "reconstructions.png",
    f"VAE reconstructions of held-out images: {vae_psnr.mean():.1f} dB (resizing: {resize_psnr.mean():.1f} dB)"))

# %% [markdown]
# ## What a latent looks like
# The latent is still an image: a (4, H/4, W/4) grid whose positions match regions of the picture,
# because the encoder only convolves and downsamples.  Below, each of the 4 channels is shown in grey
# (black -3, mid-grey 0, white +3, in units of the latents' standard deviation).  In full mode the six
# images are circles of the six colours: the circle shows, at its place, in every channel, and its
# colour decides the *signs* — red is bright in channel 2, blue dark there and in channel 3.  No
# channel is "the red one": colour and outline are coded by the mixture of the four.

# %%
picks = first_of_each_class[:6] if data.num_classes >= 6 else torch.arange(6)
examples = data.images[picks]                                          # (6, 3, H, W)
example_latents = encode_images(vae, examples)                         # (6, 4, h, w)
channels = [example_latents[:, c:c + 1] / 3 for c in range(example_latents.shape[1])]  # each (6, 1, h, w)
print(f"latents of 6 images: {tuple(example_latents.shape)}")
print("wrote", save_labelled_rows([examples] + channels, ["images"] + [f"channel {c}" for c in range(len(channels))],
                                  OUT / "latent_channels.png",
                                  "The 4 latent channels of 6 images (black -3, grey 0, white +3 standard deviations)"))

# %% [markdown]
# ## The posterior: mean or sample?
# The encoder gives a distribution, not a point.  Its standard deviation is tiny next to the spread
# of the means over the data: the KL term keeps it from collapsing to 0, no more.  Decoding the mean
# or a sample gives nearly the same image.  Diffusion trains on the means (`encode_to_latents` uses
# the mode), so one image always has one latent and a data set can be encoded once.

# %%
with torch.no_grad():
    posterior = vae.encode(held_out.images[:NUM_HELD_OUT])
    generator = torch.Generator().manual_seed(0)
    from_mean = vae.decode(posterior.mode())                           # (N, 3, H, W)
    from_sample = vae.decode(posterior.sample(generator))              # (N, 3, H, W)
print(f"posterior std, averaged: {posterior.std.mean():.4f};  std of the posterior means over the data: "
      f"{posterior.mean.std():.4f}")
print(f"decoding the mean:   {psnr(from_mean, held_out.images[:NUM_HELD_OUT]).mean():.2f} dB")
print(f"decoding a sample:   {psnr(from_sample, held_out.images[:NUM_HELD_OUT]).mean():.2f} dB")
difference = (from_sample - from_mean).abs()[:10] * 10 - 1           # |Δ| x 10, shown from black (0)
print("wrote", save_labelled_rows([held_out.images[:10], from_mean[:10], from_sample[:10], difference],
                                  ["images", "decoded\nmean", "decoded\nsample", "|difference|\nx 10"],
                                  OUT / "posterior_mean_vs_sample.png",
                                  "Decoding the posterior mean or a sample of q(z | x): nearly the same image"))

# %% [markdown]
# ## The latent scale factor
# Diffusion adds noise of variance 1, and a schedule's signal-to-noise ratio snr(t) = ᾱ_t / (1 - ᾱ_t)
# assumes data of variance 1 as well.  Data of standard deviation σ has an effective SNR of
# σ² · snr(t).  With σ = 5.5 the signal outweighs the noise until t ≈ 580: fewer of the schedule's
# steps fall where the coarse layout of an image is decided, and x_T keeps 30 times (5.5²) more
# signal than a sampler that starts from pure noise assumes.  With σ = 0.2 the signal is drowned by
# t ≈ 60, and most steps are spent on what is nearly pure noise.  So the VAE's latents are
# multiplied by latent_scale = 1 / std, *measured* on the training images after the VAE is trained
# and stored in its checkpoint (Stable Diffusion's 0.18215 is the same number for its own VAE, whose
# latents have a std of about 5.5; it means nothing for any other VAE).  Our VAE's KL term already
# keeps its latents near unit scale, so here the correction is small; it is measured all the same.
# Latents are never clipped: unlike pixels they have no natural range.

# %%
with torch.no_grad():
    unscaled = vae.encode(data.images).mode()                          # (N, 4, h, w)
scaled = encode_images(vae, data.images)                               # unscaled * latent_scale
sigma = unscaled.std().item()
print(f"latent_scale = {float(vae.latent_scale):.4f} (stored in {checkpoint.name}, measured on the training images)")
print(f"std of the latents: {sigma:.3f} before scaling, {scaled.std():.3f} after; range after scaling "
      f"[{scaled.min():.2f}, {scaled.max():.2f}] (never clipped)")
schedule = make_schedule(latent_recipe().schedule, latent_recipe().num_timesteps)
t = torch.arange(schedule.num_timesteps)
snr = schedule.snr(t)                                                  # (T,) float64


def crossing(std: float) -> int:
    """The first timestep at which noise outweighs a signal of this standard deviation."""
    return int(torch.nonzero(std**2 * snr < 1)[0, 0])


stds = {"scaled latents (std 1)": 1.0, f"unscaled latents (std {sigma:.2f})": sigma,
        "latents of std 5.5": 5.5, "latents of std 0.2": 0.2}
for name, std in stds.items():
    print(f"{name:28s}: signal and noise equal at t = {crossing(std)} of {schedule.num_timesteps}")
every = t[::10]                                                        # a point every 10 steps is enough to draw
print("wrote", save_curves({name: (every.tolist(), (std**2 * snr[every]).tolist()) for name, std in stds.items()},
                           OUT / "latent_scale.png", "timestep t", "signal-to-noise ratio σ² ᾱ_t / (1 - ᾱ_t)",
                           f"What the {schedule.kind} schedule does to latents of each scale", reference=1.0,
                           reference_label="signal = noise", logy=True))

# %% [markdown]
# ## A walk between two latents
# Mix the latents of two images, z = (1 - λ) z_a + λ z_b, and decode each mixture; next to it, the
# same mixture of the pixels (the latent walk's ends are the two reconstructions).  Mixing pixels
# superimposes two faded pictures.  Mixing latents does something else: the decoder draws *one*
# object whose colour passes through in-between hues while its outline dissolves from one shape
# into the other, and the KL term kept the latent space smooth enough that the change is gradual.
# But the images midway are blobs of no class: a straight line between latents is not a path
# through the data.  Finding latents *of the data* is the diffusion model's job.

# %%
a, b = 0, int(torch.nonzero(held_out.labels != held_out.labels[0])[0, 0])
weights = torch.linspace(0, 1, 9).view(-1, 1, 1, 1)                  # (9, 1, 1, 1)
walk = decode_latents(vae, (1 - weights) * latents[a] + weights * latents[b])          # (9, 3, H, W)
crossfade = (1 - weights) * held_out.images[a] + weights * held_out.images[b]         # (9, 3, H, W)
names = held_out.class_names
print(f"from a {names[held_out.labels[a]]} to a {names[held_out.labels[b]]} in 9 steps")
print("wrote", save_labelled_rows([walk, crossfade], ["latent walk,\ndecoded", "pixel\ncrossfade"],
                                  OUT / "latent_walk.png",
                                  f"From a {names[held_out.labels[a]]} to a {names[held_out.labels[b]]}: "
                                  "mixing latents, and mixing pixels"))

# %% [markdown]
# ## How generated images will be graded
# Lessons 06 and 07 will draw images and must say how good they are.  Looking is not a measurement,
# so we train a *grader* now, once: a small CNN that classifies real pixels, trained on images of
# another seed than any generator sees, and never used to steer sampling (a sampler steered by its
# judge would be graded on fooling it).  It gives two numbers for a set of samples: the share
# classified as the class that was asked for (accuracy), and the Fréchet distance between its
# features of the samples and of real images.  Each is only meaningful next to what real images
# score: the grader's accuracy on held-out real images is the ceiling, and the Fréchet distance
# between two independent sets of real images of the same size is the floor.

# %%
grader = shared_grader(num_images=data.num_classes * 6)
print(f"grader on {data.num_classes * 6} held-out real images: accuracy {grader.reference['accuracy']:.3f} "
      f"(the ceiling for samples); Fréchet distance between two real sets of that size "
      f"{grader.reference['frechet_distance']:.2f} (the floor)")

# %% [markdown]
# ## What to remember
# - An image is a tensor; diffusion's math does not change, but its cost grows with the number of
#   values — and a transformer's attention with the square of the number of tokens.
# - The VAE compresses 3 x H x W pixels to 4 x H/4 x W/4 latents that still form a spatial grid, and
#   decodes them back with little loss (PSNR, against a resizing floor).
# - The latents are scaled to unit std by a factor *measured* on the data and stored with the VAE,
#   so that the noise schedule means what it says.  They are never clipped.
# - Exercise: `python -m lessons.exercises.check 05` — write the reparameterised sample, the KL term
#   and the latent scale factor yourself.

# %%
print(f"lesson 05 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
