"""Figures of the probe experiment: where in depth and noise level plausibility is decodable, and how
its decodability moves with the number of inversion steps and under noise injected into each block."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_accuracy_heatmaps(result: dict, path) -> Path:
    """One panel per site (and the random DiT's best site): probe accuracy per (block, noise level)."""
    heatmap = result["heatmap"]
    panels = {f"trained DiT: {site}": np.array(values) for site, values in heatmap["accuracy"].items()}
    panels[f"random DiT: {result['best']['site']}"] = np.array(heatmap["random_init_best_site"])
    levels, blocks = heatmap["levels"], heatmap["blocks"]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 0.6 * len(blocks) + 2.2),
                                squeeze=False)
    for axis, (title, values) in zip(axes[0], panels.items()):
        image = axis.imshow(values, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
        axis.set_xticks(range(len(levels)), [str(level) for level in levels], rotation=90, fontsize=7)
        axis.set_yticks(range(len(blocks)), [str(block) for block in blocks])
        axis.set_xlabel("noise level")
        axis.set_ylabel("block")
        axis.set_title(title, fontsize=9)
        for (row, column), value in np.ndenumerate(values):
            axis.text(column, row, f"{value:.2f}"[1:], ha="center", va="center", fontsize=6, color="white")
    figure.colorbar(image, ax=axes[0].tolist(), label="held-out accuracy of that cell alone")
    figure.supxlabel("the noise level at which the inversion evaluated the DiT", fontsize=8)
    best = result["best"]
    figure.suptitle(f"Plausible or impossible, read linearly from pooled states (selected cell: "
                    f"{best['site']}, block {best['block']}, level {best['noise_level']}: "
                    f"{best['per_video_accuracy']:.2f} nested)", fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_sweeps(result: dict, path) -> Path:
    """Accuracy against inversion steps; verdict flips under noise per block; leave-one-type-out."""
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = sorted(result["inversion_steps"], key=int)
    axes[0].plot([int(s) for s in steps], [result["inversion_steps"][s] for s in steps], "o-")
    axes[0].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[0].axhline(result["vae_latent_baseline"]["per_video_accuracy"], color="tab:red", linestyle="--",
                    label="VAE latents")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("DDIM inversion steps")
    axes[0].set_ylabel("nested per-video accuracy")
    axes[0].set_title("more inversion steps", fontsize=9)
    axes[0].legend(fontsize=7)
    blocks = sorted(result["intervention"], key=int)
    axes[1].bar(blocks, [result["intervention"][b] for b in blocks])
    axes[1].set_xlabel("block given noise (α = %g)" % result["config"]["intervention_alpha"])
    axes[1].set_ylabel("share of verdicts flipped")
    axes[1].set_title("intervention: which blocks move the verdict", fontsize=9)
    kinds = sorted(result["leave_one_type_out"])
    axes[2].barh(kinds, [result["leave_one_type_out"][k] for k in kinds])
    axes[2].axvline(0.5, color="grey", linestyle=":")
    axes[2].set_xlim(0, 1)
    axes[2].set_xlabel("accuracy on the unseen kind")
    axes[2].set_title("trained on the other kinds of impossibility", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_probe_figures(result: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    return [plot_accuracy_heatmaps(result, out_dir / "probe_heatmaps.png"),
            plot_sweeps(result, out_dir / "probe_sweeps.png")]
