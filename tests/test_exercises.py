"""The exercise checker passes the reference answers, fails the blanks, and catches typical mistakes."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `lessons` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from lessons.exercises import check  # noqa: E402

EXERCISES = REPO / "lessons" / "exercises"
NUMBERS = sorted(check.EXERCISES)


def run_checker(number: str, path: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    status = check.check_exercise(number, path, out=out)
    return status, out.getvalue()


def solution(number: str) -> Path:
    return EXERCISES / "solutions" / check.EXERCISES[number].file_name


def test_every_lesson_has_an_exercise_and_a_solution():
    assert NUMBERS == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]
    for number in NUMBERS:
        assert (EXERCISES / check.EXERCISES[number].file_name).is_file()
        assert solution(number).is_file()


@pytest.mark.parametrize("number", NUMBERS, ids=[f"ex{n}" for n in NUMBERS])
def test_reference_solution_passes(number):
    status, output = run_checker(number, solution(number))
    assert status == 0, output
    assert "FAIL" not in output
    assert output.count("PASS") >= 5


@pytest.mark.parametrize("number", NUMBERS, ids=[f"ex{n}" for n in NUMBERS])
def test_blank_exercise_fails_every_check(number):
    status, output = run_checker(number)  # FILE defaults to the exercise file with blanks
    assert status == 1
    assert "PASS" not in output
    assert "not written yet (TODO:" in output
    assert "0/" in output.splitlines()[-1]


# (exercise, text in the reference answer, a typical mistake, the check that must catch it)
MISTAKES = [
    ("01", "torch.cumprod(alphas, dim=0)", "alphas", "cumulative product"),
    ("01", "(1.0 - alpha_bar).sqrt() * noise", "(1.0 - alpha_bar) * noise", "random t"),
    ("02", "coef_x0 = a_prev.sqrt() * beta / (1.0 - a)", "coef_x0 = a.sqrt() * beta / (1.0 - a)",
     "posterior mean and variance at random t"),
    ("02", "variance = beta * (1.0 - a_prev) / (1.0 - a)", "variance = beta", "posterior mean and variance"),
    ("02", "return mean + per_example(not_last * variance.sqrt(), x_t) * noise",
     "return mean + per_example(not_last * variance, x_t) * noise", "ddpm_step at random t"),
    ("03", "x_prev = x_prev + per_example(sigma, x_t) * noise", "x_prev = x_prev", "η = 1"),
    ("03", "direction = (1.0 - a_prev - sigma**2)", "direction = (1.0 - a_prev)", "equals the DDPM step"),
    ("03", "return eta * ((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)).clamp_min(0.0).sqrt()",
     "return eta * (1.0 - a / a_prev).clamp_min(0.0).sqrt()", "σ(η)"),
    ("04", "return eps_cond + (scale - 1.0) * (eps_cond - eps_uncond)",
     "return eps_uncond + scale * (eps_cond - eps_uncond)", "bit for bit"),
    ("04", "return epsilon - scale * noise_scale * gradient", "return epsilon + scale * noise_scale * gradient",
     "moves x̂_0 towards the class"),
    ("04", "noise_scale = per_example((1.0 - schedule.alpha_bar(t)).sqrt(), epsilon)",
     "noise_scale = per_example(schedule.alpha_bar(t).sqrt(), epsilon)", "linear classifier"),
    ("05", "std = torch.exp(0.5 * logvar.clamp(logvar_min, logvar_max))", "std = torch.exp(0.5 * logvar)",
     "sample clamps log σ²"),
    ("05", "std = torch.exp(0.5 * logvar.clamp(logvar_min, logvar_max))",
     "std = torch.exp(logvar.clamp(logvar_min, logvar_max))", "matches DiagonalGaussian.sample"),
    ("05", "return mean + std * noise", "return mean.detach() + std.detach() * noise", "gradients reach μ"),
    ("05", "per_dimension.flatten(start_dim=1).sum(dim=1)", "per_dimension.flatten(start_dim=1).mean(dim=1)",
     "matches DiagonalGaussian.kl"),
    ("05", "logvar = logvar.clamp(logvar_min, logvar_max)  # (B, ...)", "pass", "KL clamps log σ²"),
    ("05", "std = latents.double().std()", "std = latents.double().std(correction=0)", "unbiased std"),
    ("05", "std = latents.double().std()", "std = latents.std()", "computed in float64"),
    ("05", "return (1.0 / std).item()", "return std.item()", "1 / std"),
    ("06", "x.permute(0, 2, 4, 3, 5, 1)", "x.permute(0, 2, 4, 1, 3, 5)", "channels last"),
    ("06", "x.permute(0, 2, 4, 3, 5, 1)", "x.permute(0, 4, 2, 3, 5, 1)", "non-square"),
    ("06", "x.permute(0, 5, 1, 3, 2, 4)", "x.permute(0, 5, 1, 4, 2, 3)", "unpatchify equals the library"),
    ("06", "x.permute(0, 5, 1, 3, 2, 4)", "x.permute(0, 5, 1, 4, 2, 3)", "unpatchify(patchify(x)) = x"),
    ("06", "return x * (1 + scale) + shift", "return x * scale + shift", "zero modulation"),
    ("07", "dims = tuple(range(1, guided.ndim))", "dims = tuple(range(0, guided.ndim))", "is per example"),
    ("07", "dims = tuple(range(1, guided.ndim))", "dims = (2, 3)", "std of its conditional prediction"),
    ("07", "return phi * rescaled + (1.0 - phi) * guided", "return (1.0 - phi) * rescaled + phi * guided",
     "φ = 0 returns the guided prediction"),
    ("07", "centred.T @ centred / (features.shape[0] - 1)", "centred.T @ centred / features.shape[0]",
     "gaussian_statistics"),
    ("07", "features = features.double()  # (N, D)", "pass", "two correlated sets"),
    ("07", "- 2.0 * trace_of_root", "- trace_of_root", "shifted copy"),
    ("07", "eigenvalues.clamp_min(0.0).sqrt()", "eigenvalues.sqrt()", "singular covariance"),
    ("07", "return max(0.0, distance.item())", "return distance.item()", "never negative"),
    ("08", "centres_x = np.arange(width) + 0.5", "centres_x = np.arange(width)", "render_videos"),
    ("08", "coverage = np.clip(radius + 0.5 - distance, 0.0, 1.0)", "coverage = (distance <= radius).astype(float)",
     "a ball on black"),
    ("08", "return frame * (1.0 - coverage) + np.asarray(colour) * coverage",
     "return frame + np.asarray(colour) * coverage", "drawn over an earlier one"),
    ("08", "return x + vx, y + vy + 0.5 * gravity, vx, vy + gravity", "return x + vx, y + vy, vx, vy + gravity",
     "exact parabola"),
    ("08", "vy = -restitution * impact_speed", "vy = -impact_speed", "keeps e²"),
    ("08", "vy = -restitution * impact_speed", "vy = -restitution * vy", "floor bounces equal simulate_balls"),
    ("08", "y = floor + vy * rest + 0.5 * gravity * rest**2", "y = floor", "floor bounces equal simulate_balls"),
    ("09", "spatial = pairs // 3", "spatial = pairs // 3 + 1", "rope_split equals"),
    ("09", 'indexing="ij")', 'indexing="xy")', "depends only on the offset"),
    ("09", "frequencies = base ** (-torch.arange(pairs, dtype=torch.float64) / pairs)",
     "frequencies = base ** (-torch.arange(1, pairs + 1, dtype=torch.float64) / pairs)", "one radian"),
    ("09", '"autoregressive": num_steps}[kind]', '"autoregressive": num_steps - 1}[kind]', "autoregressive matrices"),
    ("09", "rows = num_steps + (num_generated - 1) * lag + 1", "rows = num_steps + (num_generated - 1) * lag",
     "pyramid matrices"),
    ("09", "levels = (num_steps + g * lag - m).clamp(0, num_steps)", "levels = (num_steps + g * lag - m)",
     "written out"),
    ("09", "matrix[:, num_context:] = levels", "matrix[:, :num_generated] = levels", "full_sequence matrices"),
    ("10", "t_conditional = torch.where(history, 0, t)", "t_conditional = t", "history clean, at level 0"),
    ("10", "x_unconditional = torch.where(in_history, noise, x)", "x_unconditional = noise", "pure noise, at level"),
    ("10", "t_unconditional = torch.where(history, fully_noised, t)", "t_unconditional = torch.where(history, 0, t)",
     "s = 0 returns"),
    ("10", "return conditional + (scale - 1.0) * (conditional - unconditional)",
     "return unconditional + scale * (conditional - unconditional)", "bit for bit"),
    ("10", "return conditional + (scale - 1.0) * (conditional - unconditional)",
     "return conditional + scale * (conditional - unconditional)", "equals the library at s = 0, 2, 3.5"),
    ("10", "output = denoiser(torch.cat([x_conditional, x_unconditional]), torch.cat([t_conditional, t_unconditional]))",
     "output = torch.cat([denoiser(x_conditional, t_conditional), denoiser(x_unconditional, t_unconditional)])",
     "one denoiser call"),
    ("11", "keep = torch.ones(1, z.shape[1], 1, 1, dtype=z.dtype, device=z.device)\n        keep[0, head] = 0.0",
     "keep = torch.ones(1, 1, z.shape[2], 1, dtype=z.dtype, device=z.device)\n        keep[0, 0, head] = 0.0",
     "zeroes exactly head h"),
    ("11", "return z * keep", "z * keep", "zeroes exactly head h"),
    ("11", "return z * keep", "z.mul_(keep)", "leaves the one it is given unchanged"),
    ("11", "return z * keep", "return z.mul_(keep)", "leaves the one it is given unchanged"),
    ("11", ".sum(dim=-1)  # (B, heads, T, F)", ".mean(dim=-1)  # (B, heads, T, F)", "every row sums to 1"),
    ("11", ".mean(dim=3)  # (B, heads, F, F)", ".sum(dim=3)  # (B, heads, F, F)", "every row sums to 1"),
    ("11", "pattern.reshape(batch, heads, total, num_frames, tokens).sum(dim=-1)",
     "pattern.reshape(batch, heads, total, tokens, num_frames).sum(dim=-2)", "previous-frame head"),
    ("12", "fold_of_row = np.array([fold_of_group[group] for group in groups.tolist()])",
     "fold_of_row = np.arange(len(groups)) % num_folds", "no pair has a twin on each side"),
    ("12", "shuffled = rng.permutation(np.unique(groups))", "shuffled = np.unique(groups)", "another seed"),
    ("12", "mean = X_train.mean(axis=0)", "mean = np.concatenate([X_train, X_test]).mean(axis=0)",
     "the training rows' mean"),
    ("12", "std = X_train.std(axis=0)", "std = np.concatenate([X_train, X_test]).std(axis=0)",
     "the training rows' mean and population std"),
    ("12", "(X_test - mean) / std", "(X_test - X_test.mean(axis=0)) / X_test.std(axis=0)", "applied to both sets"),
    ("12", "std = np.where(std > MIN_STD, std, 1.0)", "std = std", "not divided by 0"),
    ("12", "float(plausible[0] > impossible[0]) + 0.5 * float(plausible[0] == impossible[0])",
     "float(plausible[0] > impossible[0])", "ties count half"),
]


@pytest.mark.parametrize("number, correct, mistake, caught_by", MISTAKES,
                         ids=[f"ex{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_checker_catches_typical_mistakes(tmp_path, number, correct, mistake, caught_by):
    text = solution(number).read_text()
    assert text.count(correct) == 1, f"the reference answer no longer contains {correct!r}"
    wrong = tmp_path / f"ex{number}_work.py"
    wrong.write_text(text.replace(correct, mistake))
    status, output = run_checker(number, wrong)
    assert status == 1, output
    failed = [line for line in output.splitlines() if line.startswith("FAIL")]
    assert any(caught_by in line for line in failed), output


# (exercise, text in the reference answer, a typical mistake, words the reason for the failure must contain)
MESSAGES = [
    ("05", "std = latents.double().std()", "std = latents.double().std(correction=0)", "divide by n - 1"),
    ("05", "return (1.0 / std).item()", "return std.item()", "the scale factor is 1 / std"),
    ("05", "return mean + std * noise", "return mean.detach() + std.detach() * noise", "z has no gradient"),
    ("06", "x.permute(0, 2, 4, 3, 5, 1)", "x.permute(0, 2, 4, 1, 3, 5)", "puts the channel LAST"),
    ("06", "x.permute(0, 2, 4, 3, 5, 1)", "x.permute(0, 4, 2, 3, 5, 1)", "numbered column by column"),
    # an order no pattern names: the checker says which pixel landed where
    ("06", "x.permute(0, 2, 4, 3, 5, 1)", "x.permute(0, 2, 4, 5, 1, 3)",
     "entry 1 holds (image 0, channel 0, row 1, column 0) but should hold (image 0, channel 1, row 0, column 0)"),
    ("06", "x.permute(0, 5, 1, 3, 2, 4)", "x.permute(0, 5, 1, 4, 2, 3)",
     "inside a patch the pixels go column by column"),
    ("06", "return x * (1 + scale) + shift", "return x * scale + shift", "not x · scale + shift"),
    ("07", "dims = tuple(range(1, guided.ndim))", "dims = tuple(range(0, guided.ndim))", "take the std per example"),
    ("07", "return phi * rescaled + (1.0 - phi) * guided", "return (1.0 - phi) * rescaled + phi * guided",
     "is φ on the right term?"),
    ("07", "features = features.double()  # (N, D)", "pass", "convert the features with .double() first"),
    ("07", "eigenvalues.clamp_min(0.0).sqrt()", "eigenvalues.sqrt()", "at 0 before"),
    ("07", "return max(0.0, distance.item())", "return distance.item()", "clamp the result at 0"),
    ("08", "centres_y = np.arange(height)[:, None] + 0.5", "centres_y = np.arange(height)[:, None]",
     "pixel centres at y = i"),
    ("08", "distance = np.sqrt((centres_x - x) ** 2 + (centres_y - y) ** 2)",
     "distance = np.sqrt((centres_x - y) ** 2 + (centres_y - x) ** 2)", "x and y are swapped"),
    ("08", "coverage = np.clip(radius + 0.5 - distance, 0.0, 1.0)", "coverage = (distance <= radius).astype(float)",
     "not anti-aliased"),
    ("08", "coverage = np.clip(radius + 0.5 - distance, 0.0, 1.0)", "coverage = np.clip(radius - distance, 0.0, 1.0)",
     "centred half a pixel inside"),
    ("08", "return frame * (1.0 - coverage) + np.asarray(colour) * coverage",
     "return frame + np.asarray(colour) * coverage", "a ball in front hides what is behind it"),
    ("08", "return x + vx, y + vy + 0.5 * gravity, vx, vy + gravity", "return x + vx, y + vy, vx, vy + gravity",
     "an Euler step"),
    ("08", "vy = -restitution * impact_speed", "vy = -impact_speed", "is the restitution missing?"),
    ("08", "y = floor + vy * rest + 0.5 * gravity * rest**2", "y = floor", "the ball stops at the floor"),
    ("09", 'indexing="ij")', 'indexing="xy")', "the model lists them time-major"),
    ("09", "frequencies = base ** (-torch.arange(pairs, dtype=torch.float64) / pairs)",
     "frequencies = base ** (-torch.arange(pairs, dtype=torch.float64) / (head_dim // 2))",
     "the exponent is −i / (d/2)"),
    ("09", '"autoregressive": num_steps}[kind]', '"autoregressive": num_steps - 1}[kind]',
     "a frame starts exactly when the one before it is clean"),
    ("09", "rows = num_steps + (num_generated - 1) * lag + 1", "rows = num_steps + (num_generated - 1) * lag",
     "not all clean"),
    ("09", "levels = (num_steps + g * lag - m).clamp(0, num_steps)", "levels = (num_steps + g * lag - m).clamp(0)",
     "clamp S + g · lag − m to [0, S]"),
    ("09", "matrix[:, num_context:] = levels", "matrix[:, :num_generated] = levels", "context stays clean"),
    ("10", "t_conditional = torch.where(history, 0, t)", "t_conditional = t", "a clean frame is shown at level 0"),
    ("10", "x_unconditional = torch.where(in_history, noise, x)",
     "x_unconditional = torch.where(in_history, torch.zeros_like(x), x)", "shows the history as zeros"),
    ("10", "x_unconditional = torch.where(in_history, noise, x)", "x_unconditional = noise",
     "only the history is replaced by noise"),
    ("10", "t_unconditional = torch.where(history, fully_noised, t)", "t_unconditional = torch.where(history, 0, t)",
     "pure noise is level T − 1"),
    ("10", "return conditional + (scale - 1.0) * (conditional - unconditional)",
     "return unconditional + scale * (conditional - unconditional)", "write c + (s − 1)(c − u)"),
    ("10", "output = denoiser(torch.cat([x_conditional, x_unconditional]), torch.cat([t_conditional, t_unconditional]))",
     "output = torch.cat([denoiser(x_conditional, t_conditional), denoiser(x_unconditional, t_unconditional)])",
     "call it once on both branches"),
    ("11", "keep = torch.ones(1, z.shape[1], 1, 1, dtype=z.dtype, device=z.device)\n        keep[0, head] = 0.0",
     "keep = torch.ones(1, 1, z.shape[2], 1, dtype=z.dtype, device=z.device)\n        keep[0, 0, head] = 0.0",
     "zeroed token 0 (axis 2) instead of head 0"),
    ("11", "return z * keep", "z * keep", "a hook that returns None only looks"),
    ("11", "return z * keep", "z.mul_(keep)", "changed z in place and returned None"),
    ("11", "return z * keep", "return z.mul_(keep)", "changed the tensor it was given in place"),
    ("11", ".sum(dim=-1)  # (B, heads, T, F)", ".mean(dim=-1)  # (B, heads, T, F)",
     "you averaged over frame g's N key tokens"),
    ("11", ".mean(dim=3)  # (B, heads, F, F)", ".sum(dim=3)  # (B, heads, F, F)",
     "you summed over frame f's N query tokens"),
    ("11", "pattern.reshape(batch, heads, total, num_frames, tokens).sum(dim=-1)",
     "pattern.reshape(batch, heads, total, tokens, num_frames).sum(dim=-2)", "the tokens are time-major"),
    ("11", ".mean(dim=3)  # (B, heads, F, F)", ".mean(dim=3).transpose(-1, -2)  # (B, heads, F, F)",
     "rows and columns are swapped"),
    ("12", "fold_of_row = np.array([fold_of_group[group] for group in groups.tolist()])",
     "fold_of_row = np.arange(len(groups)) % num_folds", "a twin leaks"),
    ("12", "fold_of_row = np.array([fold_of_group[group] for group in groups.tolist()])",
     "fold_of_row = rng.permutation(len(groups)) % num_folds", "a twin leaks"),
    ("12", "shuffled = rng.permutation(np.unique(groups))", "shuffled = np.unique(groups)",
     "every seed gives the same folds"),
    ("12", "mean = X_train.mean(axis=0)", "mean = np.concatenate([X_train, X_test]).mean(axis=0)",
     "the test rows must not enter it"),
    ("12", "std = X_train.std(axis=0)", "std = np.concatenate([X_train, X_test]).std(axis=0)",
     "the test rows must not enter it"),
    ("12", "std = X_train.std(axis=0)", "std = X_train.std(axis=0, ddof=1)", "the population std, ddof = 0"),
    ("12", "(X_test - mean) / std", "(X_test - X_test.mean(axis=0)) / X_test.std(axis=0)",
     "standardised with their own mean and std"),
    ("12", "std = np.where(std > MIN_STD, std, 1.0)", "std = std", "a constant feature is centred, not divided"),
    ("12", "float(plausible[0] > impossible[0]) + 0.5 * float(plausible[0] == impossible[0])",
     "float(plausible[0] > impossible[0])", "each tie was counted as a loss: a tie counts half"),
    ("12", "float(plausible[0] > impossible[0]) + 0.5 * float(plausible[0] == impossible[0])",
     "float(plausible[0] >= impossible[0])", "each tie was counted as a win: a tie counts half"),
]


@pytest.mark.parametrize("number, correct, mistake, reason", MESSAGES,
                         ids=[f"ex{m[0]}-{i}" for i, m in enumerate(MESSAGES)])
def test_failure_messages_say_what_is_wrong(tmp_path, number, correct, mistake, reason):
    text = solution(number).read_text()
    assert text.count(correct) == 1, f"the reference answer no longer contains {correct!r}"
    wrong = tmp_path / f"ex{number}_work.py"
    wrong.write_text(text.replace(correct, mistake))
    status, output = run_checker(number, wrong)
    assert status == 1 and reason in output, output


def test_a_file_that_does_not_import_is_reported(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def add_noise(:\n")
    status, output = run_checker("01", broken)
    assert status == 1 and "could not import" in output and "SyntaxError" in output
    status, output = run_checker("01", tmp_path / "missing.py")
    assert status == 1 and "no such file" in output


def test_command_line():
    """`python -m lessons.exercises.check NN FILE`: 0 when all pass, 2 for an unknown exercise."""
    command = [sys.executable, "-m", "lessons.exercises.check"]
    passed = subprocess.run(command + ["ex04", str(solution("04"))], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "6/6 checks passed" in passed.stdout
    unknown = subprocess.run(command + ["99"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2
    assert "unknown exercise '99'" in unknown.stderr
    blank = subprocess.run(command + ["06"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert blank.returncode == 1, blank.stdout + blank.stderr
    assert "not written yet (TODO:" in blank.stdout and "Traceback" not in blank.stdout + blank.stderr


def test_every_exercise_has_one_checks_module_and_one_solution_and_each_is_registered():
    """Adding exercise NN means adding exNN_topic.py in exercises/, solutions/ and checks/: the
    checker finds the checks module by its name, so no file may lack its partners."""
    def names(folder: Path) -> set[str]:
        return {path.name for path in folder.glob("ex[0-9][0-9]_*.py")}

    exercises = names(EXERCISES)
    assert names(EXERCISES / "checks") == exercises
    assert names(EXERCISES / "solutions") == exercises
    assert {exercise.file_name for exercise in check.EXERCISES.values()} == exercises
    for number, exercise in check.EXERCISES.items():
        assert exercise.file_name.startswith(f"ex{number}_") and exercise.topic and exercise.library


def test_a_crash_is_located_in_the_students_file_never_in_the_checker(tmp_path):
    # The checks module has the exercise's own file name: naming it would send the student to the
    # wrong file.
    text = solution("03").read_text()
    assert text.count("    return x_prev\n") == 1
    wrong = tmp_path / "ex03_work.py"
    wrong.write_text(text.replace("    return x_prev\n", "    return x_prev.tolist()\n"))
    status, output = run_checker("03", wrong)
    assert status == 1
    assert "AttributeError: 'list' object has no attribute 'dtype' (at ex03_work.py:" in output  # student's code
    assert "ex03_ddim_step.py" not in output and "assertions.py" not in output and "check.py" not in output
