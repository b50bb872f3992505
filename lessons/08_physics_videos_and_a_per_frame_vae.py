# %% [markdown]
# # Lesson 08 — Physics videos, and a VAE that encodes them frame by frame
#
# A video is a stack of frames, (F, 3, H, W), and lessons 08-10 diffuse such stacks.  Judging a
# generated video by eye is even less reliable than judging an image, so the data here is chosen to
# be *checkable*: coloured balls falling under gravity and bouncing in a box, simulated exactly, with
# the physical state behind every frame.  A generated continuation can then be compared with what
# the physics says must happen.  This lesson looks at the videos and their states, at "impossible
# twins" (the same video with a physical law broken at one frame), and trains the autoencoder that
# turns every frame into a latent — imagediff's VAE of lesson 05, unchanged, fed frames as images.
#
# Run:   python lessons/08_physics_videos_and_a_per_frame_vae.py   (figures in runs/lessons/08_physics_videos_and_a_per_frame_vae/)
# Time:  about 3 min on a 2-core CPU the first time (measured: 184 s, the per-frame VAE's 2500
#        training steps included). Measured with `make lessons` on an idle 2-core machine, both cores in use.
#        On a later machine (`python lessons/run_all.py 08 09 10 11 12`, idle, 2 cores): 106 s; 187 s on a
#        2-core machine with AVX-512 BF16 and no AMX (2026-12-04); 162 s there on 2026-12-05 (a fresh clone,
#        `python lessons/run_all.py 08 09 10`, idle).
#
# The VAE trained here is shared by lessons 09-12: it is trained once.

# %%
import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from imagediff.metrics import psnr, summarise_psnr
from imagediff.pipeline import load_vae
from imagediff.plots import save_curves, save_labelled_rows
from toydiff.checkpoints import load_checkpoint
from videodiff.data import (IMPOSSIBLE_KINDS, PALETTE_NAMES, PhysicsConfig, ball_energy, make_impossible_pairs,
                            make_videos, simulate_balls)
from videodiff.metrics import physics_metrics
from videodiff.pipeline import decode_videos, encode_videos, held_out_videos, train_video_vae, vae_training_frames
from videodiff.plots import save_frame_strips

from lesson_setup import (QUICK, VIDEO_PHYSICS, VIDEO_VAE, finished, start_lesson,  # noqa: E402
                          video_dit_recipe, video_vae_recipe)

OUT = start_lesson("08_physics_videos_and_a_per_frame_vae")
NUM_HELD_OUT = 16 if QUICK else 64      # held-out videos whose frames the VAE reconstructs
started = time.perf_counter()

# %% [markdown]
# ## Videos, and the physics behind them
# Each video shows one to three balls of distinct colours on black, falling under gravity (+y is
# *down* the picture, as rows are numbered) and bouncing off the floor, the ceiling and the walls; a
# bounce keeps a share e (the restitution) of the speed into the wall.  Some videos have a grey bar
# in front of the balls (an occluder).  Every video comes with its states: the position and velocity
# of every ball in every frame, in pixels and pixels per frame.

# %%
physics = PhysicsConfig(**VIDEO_PHYSICS)
videos = make_videos(64, seed=0, config=physics)
print(f"frames {videos.frames.shape} {videos.frames.dtype} (N, F, H, W, 3); positions {videos.positions.shape} "
      f"and velocities {videos.velocities.shape} (N, F, K ball slots, (x, y)); present {videos.present.shape}")
print(f"as the models see them: {tuple(videos.to_model_range().shape)} (N, F, 3, H, W) in [-1, 1]")
print(f"physics: gravity {physics.gravity} px/frame², restitution e = {physics.restitution}, radii "
      f"{physics.radius_range} px, {physics.min_balls}-{physics.max_balls} balls, an occluder in "
      f"{physics.occluder_probability:.0%} of the videos")
shown = list(range(0, physics.num_frames, 1 if QUICK else 2))
labels = [f"video {i}\n{int(videos.present[i, 0].sum())} ball(s)" + ("\noccluder" if videos.occluders[i, 1] else "")
          for i in range(4)]
print("wrote", save_frame_strips([videos.frames[i] for i in range(4)], labels, OUT / "frames.png", frames=shown,
                                 title="Physics videos: balls under gravity, bouncing in a box (frame numbers above)"))

# %% [markdown]
# ## The simulation is exact, and energy says so
# Between bounces a ball follows the parabola x(t) = x + v t + ½ a t², a = (0, g): the exact solution,
# so nothing accumulates over frames, and `simulate_balls` started from frame 0's state gives back
# every stored frame.  The energy per unit mass, ½|v|² + g·(height above the floor), is then constant
# in flight.  At a floor bounce the vertical speed is reversed and scaled by e, so the *vertical* part
# of the energy, ½ v_y² + g·height (all kinetic at the moment of impact), keeps exactly e² of itself.
# Both are read from the stored states below — the states are the ground truth of lessons 09 and 10.

# %%
positions, velocities, _ = simulate_balls(videos.positions[:, 0].astype(np.float64),
                                          videos.velocities[:, 0].astype(np.float64), videos.radii,
                                          physics.num_frames, physics.image_size, physics.gravity, physics.restitution)
print(f"simulate_balls from frame 0 reproduces all {physics.num_frames} stored frames: max difference "
      f"{np.abs(positions - videos.positions).max():.5f} px (states are stored in float32)")
g, size = physics.gravity, physics.image_size
x, y = videos.positions[..., 0].astype(np.float64), videos.positions[..., 1].astype(np.float64)     # (N, F, K)
vx, vy = videos.velocities[..., 0].astype(np.float64), videos.velocities[..., 1].astype(np.float64)
energy = ball_energy(videos.positions.astype(np.float64), videos.velocities.astype(np.float64), videos.radii,
                     g, size)                                                                   # (N, F, K)
both_present = videos.present[:, :-1] & videos.present[:, 1:]                                   # (N, F-1, K)
# A step with no contact: v_y grew by exactly g and v_x did not change.
in_flight = both_present & (np.abs(np.diff(vy, axis=1) - g) < 1e-4) & (np.abs(np.diff(vx, axis=1)) < 1e-6)
print(f"in flight ({int(in_flight.sum())} steps without a contact): energy changes by at most "
      f"{np.abs(np.diff(energy, axis=1))[in_flight].max():.1e} per frame")
vertical = 0.5 * vy**2 + g * (size - videos.radii[:, None, :] - y)                              # (N, F, K)
# A floor bounce: falling, then rising one frame later, having hit the floor at >= 0.5 px/frame.
floor_bounce = both_present & (vy[:, :-1] > 0) & (vy[:, 1:] < 0) & (np.sqrt(2 * vertical[:, :-1]) >= 0.5)
kept = vertical[:, 1:][floor_bounce] / vertical[:, :-1][floor_bounce]
print(f"vertical energy kept by a floor bounce, over {len(kept)} bounces: mean {kept.mean():.4f}, min {kept.min():.4f}, "
      f"max {kept.max():.4f} (restitution² = {physics.restitution**2:.4f})")
video = int(np.argmax(floor_bounce.any(axis=(1, 2))))                                           # one with a bounce
frames = list(range(physics.num_frames))
curves = {f"ball {k} ({PALETTE_NAMES[videos.colours[video, 0, k]]})": (frames, energy[video, :, k].tolist())
          for k in range(physics.max_balls) if videos.present[video, 0, k]}
print("wrote", save_curves(curves, OUT / "energy.png", "frame", "energy ½|v|² + g·height (px²/frame²)",
                           f"Video {video}: energy is constant in flight and drops at each bounce"))

# %% [markdown]
# ## Impossible twins
# From the same seed, `make_impossible_pairs` draws a plausible video and a twin in which one law is
# broken at an *event frame* e: a ball teleports, vanishes, appears, changes colour, falls through the
# floor, gravity reverses, or a bounce gains energy.  The twins are identical before e.  They test a
# video model's physics the way a counterfactual tests a classifier: a model that has learned the
# physics should find the plausible continuation likely and the impossible one unlikely.  The
# tracker of `videodiff.metrics` (balls found by their hue, no network involved) reads each twin
# against its plausible video, frames e onwards: what it measures is what lesson 10 will measure on
# generated videos.

# %%
pairs = make_impossible_pairs(len(IMPOSSIBLE_KINDS), seed=0, config=physics)     # one pair of each kind
rows, titles = [], []
for i, kind in enumerate(pairs.kinds):
    e = int(pairs.event_frames[i])
    plausible, impossible = pairs.plausible.frames[i], pairs.impossible.frames[i]         # (F, H, W, 3) each
    same_before = bool((plausible[:e] == impossible[:e]).all())
    score = physics_metrics(pairs.impossible.frames[i:i + 1], pairs.plausible[i], num_context=e)
    error = "-" if score["position_error"] is None else f"{score['position_error']:5.2f} px"
    print(f"{kind:18s} event at frame {e:2d}: identical before it: {same_before}; from it on, against the plausible "
          f"video: position error {error}, balls found {score['found_share']:4.0%}, "
          f"well-formed frames {score['well_formed_share']:4.0%}")
    around = slice(e - 2, e + 3)
    for video_frames in (plausible, impossible):
        rows.append(torch.from_numpy(video_frames[around]).permute(0, 3, 1, 2).float() / 127.5 - 1)  # (5, 3, H, W)
    titles += [f"{kind}\nplausible", f"impossible\n(e = {e})"]
print("wrote", save_labelled_rows(rows, titles, OUT / "impossible_twins.png",
                                  "Impossible twins: frames e-2 … e+2 around each event frame e (the middle column)"))

# %% [markdown]
# ## The per-frame VAE
# Latent video diffusion needs latents of videos.  The simplest choice, and the one here, encodes
# every frame on its own with the image VAE of lesson 05: a video (F, 3, 32, 32) becomes latents
# (F, 4, 8, 8), and nothing in the autoencoder knows about time — the video model will have to learn
# all of the motion.  (Video autoencoders that also compress time exist; they make the diffusion
# model's job smaller and the lesson's story longer.)  `train_video_vae` is imagediff's `train_vae`
# given the frames of the training videos as a batch of images; the recipe is
# `lesson_setup.video_vae_recipe`, and lessons 09 and 10 load the same checkpoint.

# %%
recipe = video_vae_recipe()
options = recipe.dataset_options
print(f"VAE: imagediff's, base width {recipe.vae.base_channels}, multipliers {recipe.vae.channel_multipliers}, "
      f"{recipe.vae.latent_channels} latent channels, downsampling factor {recipe.vae.downsampling_factor}")
print(f"training: the {recipe.num_train_images} frames of {options['num_videos']} videos, {recipe.train.steps} steps "
      f"of batch {recipe.train.batch_size}")
checkpoint = VIDEO_VAE / "checkpoint.pt"
if finished(checkpoint, recipe.train.steps, recipe):
    trained = load_vae(checkpoint)
    print(f"loaded the trained VAE from {checkpoint}")
else:
    trained = train_video_vae(recipe, out_dir=VIDEO_VAE)
    print(f"trained the VAE in {trained.seconds:.0f} s -> {checkpoint}")
vae = trained.vae  # EMA weights, eval mode, latent scale measured
print(f"final training loss {trained.history[-1]['loss']:.4f} (MSE per pixel value + the KL term)")

# %% [markdown]
# ## Reconstructions of videos it never saw
# PSNR on the frames of held-out videos (seeds the VAE never trained on), next to two references:
# shrinking each frame by the VAE's factor and enlarging it again (a compressor must beat that), and
# an all-black frame.  The black frame scores surprisingly well, because most of every frame *is*
# black: PSNR flatters these videos, and the tracker below is the number that matters.

# %%
truth = held_out_videos(video_dit_recipe(), NUM_HELD_OUT)
frames_in = rearrange(truth.to_model_range(), "n f c h w -> (n f) c h w")                    # (N·F, 3, H, W)
latents = encode_videos(vae, truth.to_model_range())                                        # (N, F, C, h, w), scaled
decoded = decode_videos(vae, latents)                                                       # (N, F, H, W, 3) uint8
frames_out = rearrange(decoded, "n f h w c -> (n f) c h w").float() / 127.5 - 1           # (N·F, 3, H, W)
factor = recipe.vae.downsampling_factor
resized = F.interpolate(F.avg_pool2d(frames_in, factor), scale_factor=factor, mode="bilinear")
vae_psnr, resize_psnr = psnr(frames_out, frames_in), psnr(resized, frames_in)
black_psnr = psnr(torch.full_like(frames_in, -1.0), frames_in)
print(f"latents of {NUM_HELD_OUT} videos: {tuple(latents.shape)} (N, F, C, h, w), every frame encoded on its own")
print(f"VAE, held-out frames:      {summarise_psnr(vae_psnr)}")
print(f"floor, resize by {factor} and back: {summarise_psnr(resize_psnr)}")
print(f"an all-black frame:        {summarise_psnr(black_psnr)}")
pairs_shown = [decoded_or_true for i in range(3) for decoded_or_true in (truth.frames[i], decoded[i].numpy())]
print("wrote", save_frame_strips(pairs_shown, [f"{name} {i}" for i in range(3) for name in ("video", "VAE")],
                                 OUT / "reconstructions.png", frames=shown,
                                 title=f"Held-out videos and their VAE reconstructions, frame by frame "
                                       f"({vae_psnr.mean():.1f} dB)"))

# %% [markdown]
# ## The latent scale
# As in lesson 05, the latents are multiplied by latent_scale = 1 / std, measured on the first few
# thousand training frames when the VAE finished training and stored in its checkpoint, so that the noise
# schedule meets data of unit variance.  Measured again here on those frames, and on held-out ones.

# %%
measured_on = load_checkpoint(checkpoint)["latent_scale_measured_on"]                    # the first n frames
training_frames = vae_training_frames(recipe)[:measured_on]                               # (n, 3, H, W)
with torch.no_grad():
    unscaled = vae.encode(training_frames).mode()                                       # (n, C, h, w)
print(f"latent_scale = {float(vae.latent_scale):.4f} (stored in {checkpoint.name}, measured on "
      f"{len(training_frames)} training frames)")
print(f"std of the latents: {unscaled.std():.3f} before scaling, {unscaled.std().item() * float(vae.latent_scale):.3f} after; "
      f"held-out frames after scaling: {latents.std():.3f}")

# %% [markdown]
# ## The floor that every generated video inherits
# Lessons 09 and 10 will decode generated latents with this decoder and track the balls in the
# result.  Even a *perfect* video model would be judged through the decoder, so the tracker run on
# the VAE's reconstructions of real videos, against the same videos' true frames, sets a floor:
# no generated video can be expected to score better.  (`physics_metrics` scores every frame from
# `num_context` on; 1 skips only frame 0.)

# %%
floor = physics_metrics(decoded.numpy(), truth, num_context=1)
error = "-" if floor["position_error"] is None else f"{floor['position_error']:.2f} px"
print(f"tracker on VAE reconstructions of {NUM_HELD_OUT} held-out videos: position error {error}, balls found "
      f"{floor['found_share']:.1%}, well-formed frames {floor['well_formed_share']:.1%} (the floor for lessons 09-10)")

# %% [markdown]
# ## What to remember
# - The videos are generated with their exact physics (positions, velocities, energy), so a generated
#   video can be scored against the truth, and twins with one law broken test what a model learned.
# - The VAE is the image VAE of lesson 05 applied to each frame; time is left entirely to the
#   diffusion model.  Its latents are scaled to unit std by a measured factor.
# - PSNR flatters mostly-black frames; the tracker's error on reconstructions is the floor of every
#   generated video's score.
# - Exercise: `python -m lessons.exercises.check 08` — draw an anti-aliased ball, and move a ball one
#   frame under gravity through a floor bounce.

# %%
print(f"lesson 08 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
