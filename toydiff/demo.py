"""``make demo``: train the spiral model, measure its samples against fresh data, write the figures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from toydiff.data import make_dataset
from toydiff.experiment import ToyRunConfig, train_toy_model
from toydiff.metrics import compare_to_data, format_comparison
from toydiff.training import retrain_if_recipe_changed


def run_demo(out: Path, progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    config = ToyRunConfig(dataset="spiral")
    config.train.progress = progress
    print(f"== toydiff: training the {config.dataset} denoiser ({config.train.steps} steps) -> {out}")
    run = retrain_if_recipe_changed(lambda: train_toy_model(config, out_dir=out / "spiral"))
    print(f"   trained in {run.seconds:.1f} s, final loss {run.history[-1]['loss']:.4f}")

    fresh, _ = make_dataset(config.dataset, 4000, seed=1001)
    second_fresh, _ = make_dataset(config.dataset, 4000, seed=1002)
    report = {"train_seconds": run.seconds}
    for name, kwargs in {"DDIM-50": dict(sampler="ddim", num_steps=50),
                         "DDPM-1000": dict(sampler="ddpm")}.items():
        started = time.perf_counter()
        samples = run.sample(4000, seed=7, **kwargs)
        seconds = time.perf_counter() - started
        comparison = compare_to_data(samples, fresh, second_fresh)
        report[name] = {"seconds": seconds, **comparison}
        print(f"   {name:9s} {seconds:5.2f} s  {format_comparison(comparison)}")

    from toydiff import plots

    written = plots.write_data_figures(config.dataset, out / "figures") + plots.write_model_figures(run, out / "figures")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"   wrote {len(written)} figures under {out / 'figures'} and {out / 'report.json'}")
    return report


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    run_demo(Path("runs/demo"))
