"""``make demo``, the image part: train the VAE and the latent DiT, then draw guided samples.

    python -m imagediff demo --out runs/demo/images       # its run time: README, "Two commands"

Checkpoints under OUT are reused (training resumes where it stopped), so a second run only samples.
Writes reconstructions, a grid of one sample per class at CFG s = 0, 1 and 3, and report.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from imagediff.data import make_dataset
from imagediff.evaluation import balanced_request
from imagediff.metrics import psnr, summarise_psnr
from imagediff.pipeline import DiffusionRunConfig, VAERunConfig, decode_latents, encode_images, train_image_diffusion, \
    train_vae
from imagediff.plots import columns_per_class_grid, save_image_grid, save_labelled_rows
from toydiff.training import retrain_if_recipe_changed


QUICK_OPTIONS = {"shapes": ["ring", "cross"], "colours": ["red", "blue"]}


def run_demo(out: Path, progress: bool = True, quick: bool = False) -> dict:
    """quick: the same steps on 16x16 images of 4 classes with a few dozen training steps (for tests)."""
    out.mkdir(parents=True, exist_ok=True)
    size, options = (16, QUICK_OPTIONS) if quick else (32, {})
    vae_config = VAERunConfig(image_size=size, dataset_options=options)
    config = DiffusionRunConfig(image_size=size, dataset_options=options,
                                vae_checkpoint=str(out / "vae" / "checkpoint.pt"))
    if quick:
        vae_config.num_train_images = config.num_train_images = 500
        vae_config.train = replace(vae_config.train, steps=30, checkpoint_every=0, log_every=10)
        config.train = replace(config.train, steps=30, batch_size=32, checkpoint_every=0, log_every=10,
                               compile=False)  # compiling would outlast 30 steps
    vae_config.train.progress = progress
    print(f"== imagediff: training the VAE ({vae_config.train.steps} steps) -> {out / 'vae'}", flush=True)
    vae_run = retrain_if_recipe_changed(lambda: train_vae(vae_config, out_dir=out / "vae"))
    held_out = make_dataset(vae_config.dataset, 1000, seed=300, image_size=size, **options).images
    reconstructions = decode_latents(vae_run.vae, encode_images(vae_run.vae, held_out))
    values = psnr(reconstructions, held_out)
    print(f"   latent scale {float(vae_run.vae.latent_scale):.4f} (measured); held-out PSNR {summarise_psnr(values)}")
    save_labelled_rows([held_out[:10], reconstructions[:10]], ["images", "VAE"], out / "reconstructions.png",
                       f"VAE reconstructions of held-out images, PSNR {values.mean().item():.1f} dB")

    config.train.progress = progress
    print(f"== imagediff: training the latent DiT ({config.train.steps} steps) -> {out / 'latent'}", flush=True)
    run = retrain_if_recipe_changed(lambda: train_image_diffusion(config, out_dir=out / "latent", vae=vae_run.vae))
    labels = balanced_request(len(run.class_names), 1)
    report = {"vae_train_seconds": vae_run.seconds, "psnr_db": values.mean().item(),
              "dit_train_seconds": run.seconds, "sampling_seconds": {}}
    for scale in (0.0, 1.0, 3.0):
        started = time.perf_counter()
        images = run.sample(labels=labels, guidance_scale=scale, num_steps=50, seed=1)
        report["sampling_seconds"][str(scale)] = time.perf_counter() - started
        save_image_grid(images, out / f"samples_cfg_{scale:g}.png", columns=columns_per_class_grid(run.class_names),
                        title=f"one sample per class (rows: shapes, columns: colours), CFG s = {scale:g}")
    if run.guide is not None:  # the default sampling: CFG s = 3 plus autoguidance by the run's early snapshot
        images = run.sample(labels=labels, guidance_scale=3.0, guide_scale=run.default_guide_scale, num_steps=50,
                            seed=1)
        save_image_grid(images, out / "samples_cfg_3_autoguided.png", columns=columns_per_class_grid(run.class_names),
                        title=f"CFG s = 3 with autoguidance w = {run.default_guide_scale:g} (guide: the EMA at step "
                              f"{run.config.guide_step()})")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"   wrote reconstructions.png, samples_cfg_*.png and report.json under {out}")
    return report
