"""The benches' own machinery: timings in turns, and the video bench end to end at its quick sizes."""
import json
import math

import pytest
import torch

import imagediff.bench
from imagediff.bench import interleaved_medians, median_seconds


class DriftingMachine:
    """A fake clock on a machine that slows down by 1% with every call: a function of cost c takes
    c · 1.01^k seconds on the k-th call of any function."""

    def __init__(self):
        self.now, self.calls = 0.0, 0

    def perf_counter(self):
        return self.now

    def work(self, cost):
        def function():
            self.now += cost * 1.01 ** self.calls
            self.calls += 1
        return function


def test_timings_in_turns_keep_the_ratio_that_one_after_the_other_loses(monkeypatch):
    machine = DriftingMachine()
    monkeypatch.setattr(imagediff.bench.time, "perf_counter", machine.perf_counter)
    cheap, dear = machine.work(1.0), machine.work(2.0)
    medians = interleaved_medians({"cheap": cheap, "dear": dear}, rounds=10, per_round=4)
    assert medians["dear"] / medians["cheap"] == pytest.approx(2.0, rel=0.05)
    # The same two functions timed one after the other: the drift between them reads as a difference.
    machine.now, machine.calls = 0.0, 0
    separate = median_seconds(dear, 40) / median_seconds(cheap, 40)
    assert abs(separate - 2.0) > 0.5


def test_timings_in_turns_call_every_function_in_rounds(monkeypatch):
    order = []
    medians = interleaved_medians({name: (lambda name=name: order.append(name)) for name in "ab"}, rounds=3,
                                  per_round=2, warmup=1)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert set(medians) == {"a", "b"} and all(value >= 0 for value in medians.values())


def test_the_video_bench_runs_at_its_quick_sizes_and_reports_shares_of_one_matmul_rate(tmp_path):
    from videodiff.bench import run_bench

    report = run_bench(tmp_path, repeats=1, num_videos=2, quick=True, baseline=False)
    stored = json.loads((tmp_path / "bench.json").read_text())
    throughput = stored["throughput"]
    assert stored["chain"]["total_wall_seconds"] > 0 and report["throughput"]["target_share"] == 0.75
    for rate in (throughput, throughput["eager"]):
        assert rate["flop_rate"] > 0 and rate["frames_per_second"] > 0
        assert math.isclose(rate["share_of_matmul_rate"], rate["flop_rate"] / throughput["matmul_rate"])
    assert throughput["eager"]["compiled"] is False
    assert (tmp_path / "rollout_vanilla.gif").exists()
    assert stored["sampler"] == {"scheduling": "full_sequence", "steps": 10, "eta": 1.0}   # the rollouts' default
    # The short rollout says where its frames fail: each of its 2 x 3 generated frames in one group by balls.
    short = stored["short_rollout"]
    assert sum(group["frames"] for group in short["intact_by_crowding"]["by_balls"].values()) == 2 * 3
    assert 0 <= short["intact_share"] <= 1
    # Each long rollout's row says how its frames fail.
    rows = stored["long_rollout"]["rows"]
    assert all(row["faults"]["all"]["frames"] == 2 * 6 for row in rows)


def test_the_image_step_rate_comes_with_the_matmul_rate_timed_beside_it():
    from imagediff.bench import dit_training_rate
    from imagediff.pipeline import DiffusionRunConfig

    eager = DiffusionRunConfig()
    eager.train.compile = False  # the step as an eager recipe trains it (compiling takes longer than this test)
    rate = dit_training_rate(eager, (4, 8, 8), num_classes=3, repeats=2)
    assert rate["matmul_rate"] > 0 and rate["flop_rate"] > 0 and rate["compiled"] is False
    assert math.isclose(rate["flop_rate"], rate["step_flops"] / rate["step_seconds"])


def test_a_bf16_recipes_step_runs_under_autocast_and_is_also_timed_in_fp32(monkeypatch):
    import imagediff.bench
    import videodiff.bench
    from imagediff.pipeline import DiffusionRunConfig
    from videodiff.dit import video_dit_config
    from videodiff.pipeline import VideoDiffusionRunConfig

    seen = []

    def recording(model_class):
        class Recording(model_class):
            def forward(self, *args, **kwargs):
                out = super().forward(*args, **kwargs)
                seen.append(out.dtype)
                return out
        return Recording

    monkeypatch.setattr(imagediff.bench, "DiT", recording(imagediff.bench.DiT))
    monkeypatch.setattr(videodiff.bench, "VideoDiT", recording(videodiff.bench.VideoDiT))
    image = DiffusionRunConfig()
    image.train.compile = False
    for precision, dtype in (("bf16", torch.bfloat16), ("no", torch.float32)):
        seen.clear()
        rate = imagediff.bench.dit_training_rate(image, (4, 8, 8), num_classes=3, repeats=1, precision=precision)
        assert rate["precision"] == precision and set(seen) == {dtype}
        assert ("matmul_bf16_rate" in rate) is (precision == "bf16")
    video = VideoDiffusionRunConfig(dit=video_dit_config("tiny", hidden_dim=32, depth=1, num_heads=2, num_frames=4))
    video.train.compile = False
    for precision in ("bf16", "no"):
        video.train.mixed_precision = precision
        seen.clear()
        shares = videodiff.bench.step_shares(video, (4, 8, 8), rounds=1)
        assert shares["precision"] == precision
        if precision == "bf16":  # the recipe's and the eager step in bf16, the fp32 one beside them
            assert seen.count(torch.bfloat16) > 0 and seen.count(torch.float32) > 0
            assert math.isclose(shares["fp32"]["share_of_matmul_rate"], shares["fp32"]["flop_rate"] / shares["matmul_rate"])
            assert math.isclose(shares["share_of_bf16_matmul_rate"], shares["flop_rate"] / shares["matmul_rate_bf16"])
        else:
            assert set(seen) == {torch.float32} and "fp32" not in shares and "matmul_rate_bf16" not in shares


def test_the_video_step_of_an_anchored_model_feeds_it_its_anchor_and_counts_its_work(monkeypatch):
    from dataclasses import replace

    import videodiff.bench as bench
    from videodiff.dit import video_training_flops
    from videodiff.pipeline import quick_run_configs

    seen = []

    def recording(model, enabled):
        def forward(x_t, t, *args, **kwargs):
            seen.append(t.clone())
            return model(x_t, t, *args, **kwargs)
        return forward

    monkeypatch.setattr(bench, "compile_or_eager", recording)
    _, config = quick_run_configs("unused.pt")
    config.dit = replace(config.dit, anchor_frame=True)
    step, description = bench.training_step(config, (4, 8, 8), compile=False, batch_size=2)
    step()
    # The model sees its anchor, clean, in front of a whole window of 4.
    (t,) = seen
    assert t.shape == (2, 5) and (t[:, 0] == 0).all()
    dit = replace(config.dit, in_channels=4, input_size=(8, 8))
    assert description["frames"] == 2 * 4  # the frames learned: the anchor is not one of them
    assert description["flops_per_step"] == video_training_flops(dit, 2, frames=5) > video_training_flops(dit, 2, 4)
