"""torch.compile where the machine can compile, the eager model where it cannot: same numbers either way."""
import pytest
import torch

from imagediff.dit import DiT, DiTConfig
from toydiff import compilation
from toydiff.compilation import CompiledOrEager, compile_or_eager
from toydiff.data import make_dataset
from toydiff.losses import DiffusionObjective
from toydiff.models import MLPConfig, MLPDenoiser
from toydiff.schedules import make_schedule
from toydiff.training import TensorBatches, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def small_dit():
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=(4, 4), in_channels=2, patch_size=2, hidden_dim=32, depth=2, num_heads=2,
                          num_classes=3))
    for parameter in model.parameters():  # away from adaLN-Zero's zeros, so the blocks do something
        torch.nn.init.normal_(parameter, std=0.2)
    return model


def dit_inputs():
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(3, 2, 4, 4, generator=generator), torch.tensor([5, 500, 999]), torch.tensor([0, 2, 3]))


def test_a_compiled_dit_gives_the_eager_outputs_and_gradients():
    model = small_dit()
    x, t, y = dit_inputs()
    eager = model(x, t, y)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    forward = compile_or_eager(model)
    compiled = forward(x, t, y)
    assert forward.compiled  # on this machine compilation must work, not fall back to eager
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    compiled.square().sum().backward()
    # Fused kernels sum in another order: float32 rounding, relative to each gradient's own scale.
    for parameter, expected in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-3, atol=1e-4 * expected.abs().max().item() + 1e-7)


def test_a_compiled_video_dit_gives_the_eager_outputs_and_gradients():
    # The video recipe trains compiled by default: its 3-D RoPE and per-frame modulation must survive it.
    from videodiff.dit import VideoDiT, video_dit_config

    torch.manual_seed(0)
    model = VideoDiT(video_dit_config("tiny", hidden_dim=32, depth=1, num_heads=2, num_frames=3, in_channels=2,
                                      input_size=(4, 4)))
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 2, 4, 4, generator=generator), torch.tensor([[0, 300, 999], [5, 5, 640]])
    eager = model(x, t)
    eager.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    forward = compile_or_eager(model)
    compiled = forward(x, t)
    assert forward.compiled
    # float32 rounding in another summation order, relative to the output's own scale
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5 * eager.abs().max().item())
    compiled.square().sum().backward()
    for parameter, expected in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-3, atol=1e-4 * expected.abs().max().item() + 1e-7)
    # Frames are not interchangeable: swapping two frames' levels changes the compiled output too.
    assert not torch.allclose(forward(x, t.flip(1)), compiled)


def test_where_the_compiler_fails_the_model_runs_eagerly_with_a_warning(monkeypatch):
    from torch._inductor.exc import InvalidCxxCompiler

    def no_compiler(model, **options):
        def fail(*args, **kwargs):
            raise InvalidCxxCompiler()
        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    model = small_dit()
    x, t, y = dit_inputs()
    forward = compile_or_eager(model)
    with pytest.warns(UserWarning, match="torch.compile failed on this machine.*runs eagerly"):
        output = forward(x, t, y)
    assert not forward.compiled
    torch.testing.assert_close(output, model(x, t, y), rtol=0, atol=0)
    forward(x, t, y)  # no second warning, no second attempt
    assert forward.training and forward.null_label == model.null_label  # attributes are the model's


def test_an_error_of_the_model_itself_is_not_taken_for_a_missing_compiler(monkeypatch):
    def compile_that_sees_a_bad_input(model, **options):
        def run(*args, **kwargs):
            raise ValueError("labels out of range")
        return run

    monkeypatch.setattr(torch, "compile", compile_that_sees_a_bad_input)
    forward = compile_or_eager(small_dit())
    with pytest.raises(ValueError, match="labels out of range"):
        forward(*dit_inputs())
    assert forward.compiled  # still the compiled path: nothing fell back


def test_without_torch_compile_the_wrapper_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.delattr(torch, "compile")
    model = small_dit()
    with pytest.warns(UserWarning, match="no torch.compile"):
        forward = CompiledOrEager(model)
    x, t, y = dit_inputs()
    torch.testing.assert_close(forward(x, t, y), model(x, t, y), rtol=0, atol=0)
    assert compile_or_eager(model, enabled=False) is model


def spiral_run(compile_model: bool, steps: int = 30):
    """A small spiral model trained for ``steps`` steps, compiled or eager, from the same seed."""
    torch.manual_seed(0)
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2))
    points, _ = make_dataset("spiral", 1000, seed=0)
    config = TrainConfig(steps=steps, batch_size=64, log_every=10, progress=False, warmup_steps=5,
                         compile=compile_model)
    return train(model, DiffusionObjective(make_schedule("linear")), TensorBatches(points), config)


def test_compiled_training_follows_the_eager_losses(tmp_path):
    eager, compiled = spiral_run(False), spiral_run(True)
    assert [round(h["loss"], 4) for h in compiled.history] == pytest.approx(
        [round(h["loss"], 4) for h in eager.history], abs=2e-4)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert not isinstance(compiled.model, compilation.CompiledOrEager)  # the result holds the plain model


class BackwardThatCannotCompile(torch.autograd.Function):
    """The identity, whose backward fails as a damaged compile cache makes a compiled backward fail."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        from torch._inductor.exc import InductorError
        raise InductorError(ImportError("kernel.so: file too short"), None)


def compile_with_a_broken_backward(model, **options):
    """A stand-in for torch.compile: the model's forward, whose backward fails to compile."""
    return lambda *args, **kwargs: BackwardThatCannotCompile.apply(model(*args, **kwargs))


def test_where_the_backward_fails_to_compile_training_redoes_the_step_eagerly(monkeypatch):
    """AOTAutograd compiles the backward at the first loss.backward(), outside the wrapper: a run stopped
    while it compiled can leave a damaged kernel in PyTorch's cache, and every later compile then fails
    there ("file too short"). Training falls back to eager and redoes that step with the same draws."""
    eager = spiral_run(False, steps=20)
    monkeypatch.setattr(torch, "compile", compile_with_a_broken_backward)
    with pytest.warns(UserWarning, match="torch.compile failed on this machine.*InductorError.*file too short"):
        fell_back = spiral_run(True, steps=20)
    assert [h["loss"] for h in fell_back.history] == [h["loss"] for h in eager.history]  # the same run, bit for bit
    for a, b in zip(eager.model.parameters(), fell_back.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_bench_times_a_step_whose_backward_fails_to_compile_eagerly_and_says_so(monkeypatch, tmp_path):
    from videodiff.bench import training_rate
    from videodiff.pipeline import quick_run_configs

    _, config = quick_run_configs(str(tmp_path / "vae.pt"))
    monkeypatch.setattr(torch, "compile", compile_with_a_broken_backward)
    with pytest.warns(UserWarning, match="torch.compile failed on this machine.*file too short"):
        rate = training_rate(config, (4, 8, 8), repeats=1, precision="no", compile=True, batch_size=2)
    assert rate["compiled"] is False and rate["seconds_per_step"] > 0


def test_the_image_bench_times_a_step_whose_backward_fails_to_compile_eagerly_and_says_so(monkeypatch):
    from imagediff.bench import dit_training_rate
    from imagediff.pipeline import DiffusionRunConfig

    config = DiffusionRunConfig()
    config.train.batch_size = 2
    monkeypatch.setattr(torch, "compile", compile_with_a_broken_backward)
    with pytest.warns(UserWarning, match="torch.compile failed on this machine.*file too short"):
        rate = dit_training_rate(config, (4, 8, 8), num_classes=3, repeats=1, compile=True, precision="no")
    assert rate["compiled"] is False and rate["step_seconds"] > 0
