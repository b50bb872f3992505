"""videodiff.bench_gpu: the GPU checks run (on the CPU, tiny sizes) and report honestly; without CUDA the
command refuses with one clear line instead of a traceback. The GPU figures themselves are in docs/gpu.md."""
import json

import pytest
import torch

import videodiff.bench_gpu as bench_gpu

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_quick_cpu_run_passes_every_check_and_writes_its_report(tmp_path, capsys):
    assert bench_gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert set(report["checks"]) == {"placement", "bf16", "sdpa", "chain", "commands"}
    assert report["passed"] is True
    chain = report["checks"]["chain"][0]
    assert chain["rollout_shape"] == [4, 6, 32, 32, 3] and chain["reload_relative_max_error"] < 1e-6
    commands = report["checks"]["commands"][0]
    assert commands["exit_statuses"] == {"rollout": 0, "evaluate": 0, "probe": 0, "ablate": 0}
    assert commands["rollout_frames_shape"] == [2, 6, 32, 32, 3]
    row = report["throughput"][0]
    assert row["size"] == "tiny" and row["frames_per_second"] > 0 and 0 < row["share_of_matmul_rate"]
    assert "all checks passed" in capsys.readouterr().out


def test_a_failed_check_makes_the_command_exit_1_and_names_it(tmp_path, monkeypatch, capsys):
    def broken(size, window, device):
        return {"size": size, "passed": False}

    monkeypatch.setattr(bench_gpu, "check_bf16", broken)
    assert bench_gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 1
    assert "FAILED: ['bf16']" in capsys.readouterr().out
    assert json.loads((tmp_path / "gpu_bench.json").read_text())["passed"] is False


def test_without_cuda_or_with_a_full_cpu_run_it_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
    assert bench_gpu.main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "--quick" in capsys.readouterr().err
    assert not (tmp_path / "gpu_bench.json").exists()
