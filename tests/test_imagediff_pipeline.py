"""Latent diffusion end to end: metrics, classifiers, the pipeline (also as two processes under
torchrun), guidance on images and the CLI.

The trained fixtures are deliberately tiny (16x16 images of 2 shapes x 2 colours) so the whole module
runs in well under a minute on 2 cores; the full-size figures are measured by `make bench`.
"""
import math
import subprocess
import sys
import textwrap
from dataclasses import replace
from functools import partial

import pytest
import torch

from imagediff.classifier import (
    NOISY_KIND, EvaluationClassifier, EvaluationClassifierConfig, EvaluationRunConfig, NoisyClassifierRunConfig,
    NoisyLatentClassifier, load_evaluation_classifier, load_noisy_classifier, train_evaluation_classifier,
    train_noisy_classifier,
)
from imagediff.cli import main
from imagediff.data import DataError
from imagediff.dit import DiTConfig
from imagediff.evaluation import Grader, balanced_request, guidance_sweep
from imagediff.metrics import accuracy, frechet_distance, psnr
from imagediff.pipeline import (
    GUIDANCE_RESCALE, DiffusionRunConfig, VAERunConfig, build_dit, default_rescale, encode_images, load_image_diffusion,
    load_vae, train_image_diffusion, train_vae,
)
from imagediff.vae import vae_config
from toydiff.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from toydiff.training import TrainConfig

OPTIONS = {"shapes": ["ring", "cross"], "colours": ["red", "blue"]}  # 4 classes, easy to tell apart at 16 px
SIZE = 16


def quick(steps, batch_size, learning_rate=2e-3, **extra):
    return TrainConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=20,
                       ema_decay=0.99, log_every=50, checkpoint_every=0, progress=False, **extra)


# ---------------------------------------------------------------------------------------------
#                                           Metrics
# ---------------------------------------------------------------------------------------------


def test_psnr_matches_its_definition():
    images = torch.zeros(3, 3, 8, 8)
    off_by = images + 0.1  # MSE 0.01 over a range of 2: 10 log10(4 / 0.01)
    assert torch.allclose(psnr(off_by, images), torch.full((3,), 10 * math.log10(400.0), dtype=torch.float64))
    # Reconstructions are clamped to the range, as when they are saved: 5.0 counts as 1.0.
    assert psnr(torch.full((1, 1, 2, 2), 5.0), torch.ones(1, 1, 2, 2)).item() > 150
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4))


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=generator, dtype=torch.float64) * 2 + torch.tensor([1.0, 0.0, 0.0],
                                                                                            dtype=torch.float64)
    # Diagonal covariances: |μ_a - μ_b|² + Σ (σ_a - σ_b)² = 1 + 3 · (1 - 2)² = 4.
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :2])


def test_accuracy_counts_the_argmax():
    logits = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert accuracy(logits, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
#                                          Classifiers
# ---------------------------------------------------------------------------------------------


def test_noisy_classifier_is_a_function_of_x_t_and_t_with_a_gradient_in_x():
    config = DiTConfig(input_size=(4, 4), in_channels=4, patch_size=1, hidden_dim=32, depth=1, num_heads=2)
    classifier = NoisyLatentClassifier(config, num_labels=5)
    torch.nn.init.normal_(classifier.trunk.blocks[0].adaln_modulation[-1].weight, std=0.1)  # leave adaLN-Zero's identity
    x = torch.randn(3, 4, 4, 4, requires_grad=True)
    t = torch.tensor([0, 500, 999])
    logits = classifier(x, t)
    assert logits.shape == (3, 5)
    (gradient,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert gradient.abs().sum() > 0  # classifier guidance follows this gradient
    assert not torch.allclose(classifier(x, t), classifier(x, torch.tensor([999, 0, 500])))  # uses t
    with pytest.raises(ValueError, match="at least 2 classes"):
        NoisyLatentClassifier(config, num_labels=1)


def test_a_noisy_classifier_of_another_layout_is_refused_in_one_line(tmp_path):
    config = DiTConfig(input_size=(4, 4), in_channels=4, patch_size=1, hidden_dim=32, depth=1, num_heads=2)
    classifier = NoisyLatentClassifier(config, num_labels=3)
    # The layout of a classifier that was a DiT itself: the trunk's weights at the top level.
    weights = {name.removeprefix("trunk."): value for name, value in classifier.state_dict().items()}
    save_checkpoint(tmp_path / "old.pt", {"kind": NOISY_KIND, "config": classifier.config_dict(), "step": 1,
                                          "ema": {"model": weights}})
    with pytest.raises(CheckpointError) as refused:
        load_noisy_classifier(tmp_path / "old.pt")
    message = str(refused.value)
    assert "another layout" in message and "'trunk.blocks.0.adaln_modulation.1.bias'" in message
    assert "train-classifier --kind noisy" in message and "\n" not in message
    save_checkpoint(tmp_path / "new.pt", {"kind": NOISY_KIND, "config": classifier.config_dict(), "step": 1,
                                          "ema": {"model": classifier.state_dict()}})
    assert torch.equal(load_noisy_classifier(tmp_path / "new.pt").head[1].weight, classifier.head[1].weight)


def test_evaluation_classifier_checks_its_input():
    classifier = EvaluationClassifier(EvaluationClassifierConfig(image_size=16, num_classes=4))
    assert classifier(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    assert classifier.features(torch.zeros(2, 3, 16, 16)).shape == (2, 128)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 16, 16\)"):
        classifier(torch.zeros(2, 3, 32, 32))


# ---------------------------------------------------------------------------------------------
#                              A tiny latent diffusion run, end to end
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagediff")
    vae_run = train_vae(VAERunConfig(num_train_images=2000, image_size=SIZE, dataset_options=OPTIONS,
                                     vae=vae_config("tiny"), train=quick(250, 32)), out_dir=root / "vae")
    config = DiffusionRunConfig(num_train_images=2000, image_size=SIZE, dataset_options=OPTIONS,
                                vae_checkpoint=str(root / "vae" / "checkpoint.pt"),
                                dit=DiTConfig(patch_size=1, hidden_dim=64, depth=2, num_heads=2),
                                train=quick(400, 64, learning_rate=2e-3))
    diffusion = train_image_diffusion(config, out_dir=root / "latent")
    grader_net = train_evaluation_classifier(
        EvaluationRunConfig(num_train_images=1000, image_size=SIZE, dataset_options=OPTIONS,
                            classifier=EvaluationClassifierConfig(width=16), train=quick(300, 32)),
        out_dir=root / "evaluation")
    return {"root": root, "vae": vae_run, "diffusion": diffusion, "grader_net": grader_net}


def test_latent_scale_is_measured_stored_and_gives_unit_std_latents(runs):
    root, vae = runs["root"], runs["vae"].vae
    stored = load_checkpoint(root / "vae" / "checkpoint.pt", kind="imagediff.vae")
    assert stored["ema"]["model"]["latent_scale"].item() == pytest.approx(float(vae.latent_scale))
    assert float(vae.latent_scale) != 1.0
    reloaded = load_vae(root / "vae" / "checkpoint.pt").vae
    from imagediff.data import make_dataset
    images = make_dataset("shapes", 500, seed=0, image_size=SIZE, **OPTIONS).images
    latents = encode_images(reloaded, images)
    assert latents.shape == (500, 4, SIZE // 4, SIZE // 4)
    assert latents.double().std().item() == pytest.approx(1.0, abs=0.1)  # measured on the training images
    assert latents.abs().max() > 1.5  # scaled, never clipped like pixels (docs/pitfalls.md, pitfall 11)


def test_a_vae_without_a_measured_scale_is_refused(runs, tmp_path):
    state = load_checkpoint(runs["root"] / "vae" / "checkpoint.pt")
    del state["latent_scale_measured_on"]
    save_checkpoint(tmp_path / "unfinished.pt", state)
    with pytest.raises(CheckpointError, match="never measured"):
        load_vae(tmp_path / "unfinished.pt")


def test_sampling_reloads_the_run_and_is_reproducible(runs):
    path = runs["root"] / "latent" / "checkpoint.pt"
    run = load_image_diffusion(path)
    images = run.sample(labels=["red ring", "blue cross"], guidance_scale=3.0, num_steps=5, seed=7)
    assert images.shape == (2, 3, SIZE, SIZE) and torch.isfinite(images).all()
    again = runs["diffusion"].sample(labels=[run.class_index("red ring"), 3], guidance_scale=3.0, num_steps=5,
                                     seed=7)
    assert torch.equal(images, again)
    _, latents = run.sample(labels=[0], num_steps=5, return_samples=True)
    assert latents.shape == (1, 4, SIZE // 4, SIZE // 4)
    with pytest.raises(ValueError, match="unknown prompt 'purple circle'.*red ring"):
        run.sample(labels=["purple circle"])
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        run.sample(labels=[4])


def test_class_names_are_read_from_the_checkpoint_not_regenerated(runs, tmp_path, monkeypatch):
    path = runs["root"] / "latent" / "checkpoint.pt"
    state = load_checkpoint(path)
    assert state["config"]["class_names"] == ["red ring", "blue ring", "red cross", "blue cross"]
    state["config"]["class_names"] = ["a", "b", "c", "d"]  # what the checkpoint says is what loading gives
    save_checkpoint(tmp_path / "renamed.pt", state)
    del state["config"]["class_names"]  # a checkpoint without names: those of the data set, regenerated
    save_checkpoint(tmp_path / "unnamed.pt", state)
    assert load_image_diffusion(tmp_path / "unnamed.pt").class_names == runs["diffusion"].class_names

    import imagediff.pipeline

    def no_data(*args, **kwargs):
        raise AssertionError("loading a checkpoint that names its classes generated data")

    monkeypatch.setattr(imagediff.pipeline, "make_dataset", no_data)
    assert load_image_diffusion(tmp_path / "renamed.pt").class_names == ["a", "b", "c", "d"]
    assert load_image_diffusion(path).class_names == runs["diffusion"].class_names


def test_the_runs_timestep_sampling_reaches_its_objective(runs, objective_options):
    import imagediff.pipeline

    config = DiffusionRunConfig(num_train_images=200, image_size=SIZE, dataset_options=OPTIONS,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"),
                                timestep_sampling="logit_normal", logit_mean=0.7, logit_std=1.3, train=quick(2, 8))
    options = objective_options(imagediff.pipeline, "DiffusionObjective", train_image_diffusion, config)
    assert (options["timestep_sampling"], options["logit_mean"], options["logit_std"]) == ("logit_normal", 0.7, 1.3)


def test_a_diffusion_run_refuses_the_latents_of_another_vae(runs, tmp_path):
    state = load_checkpoint(runs["root"] / "vae" / "checkpoint.pt")
    for weights in (state["model"], state["ema"]["model"]):
        weights["latent_scale"] = weights["latent_scale"] * 2
    save_checkpoint(tmp_path / "other_vae.pt", state)
    with pytest.raises(CheckpointError, match="different VAE"):
        load_image_diffusion(runs["root"] / "latent" / "checkpoint.pt", vae_checkpoint=tmp_path / "other_vae.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_image_diffusion(runs["root"] / "latent" / "checkpoint.pt", vae_checkpoint=tmp_path / "missing.pt")


def test_grader_compares_frechet_distances_at_the_same_size(runs):
    grader = Grader.build(runs["grader_net"], num_images=300, image_size=SIZE, **OPTIONS)
    from imagediff.data import make_dataset
    real = make_dataset("shapes", 50, seed=999, image_size=SIZE, **OPTIONS)
    score = grader.score(real.images, real.labels)
    assert score["real_frechet_distance"] == pytest.approx(grader.reference_at(50)["frechet_distance"])
    # Fewer images, larger bias: the floor at 50 images lies above the floor at 300.
    assert grader.reference_at(50)["frechet_distance"] > grader.reference["frechet_distance"]
    assert score["frechet_distance"] < 3 * score["real_frechet_distance"]  # real images score like real images
    with pytest.raises(ValueError, match="build it with num_images >= 301"):
        grader.score(torch.zeros(301, 3, SIZE, SIZE), torch.zeros(301, dtype=torch.int64))
    with pytest.raises(ValueError, match="grades 4 classes of 16px"):
        Grader.build(runs["grader_net"], num_images=10, image_size=SIZE)  # all 42 classes


def test_guided_samples_beat_unguided_ones_on_accuracy(runs):
    grader = Grader.build(runs["grader_net"], num_images=100, image_size=SIZE, **OPTIONS)
    assert grader.reference["accuracy"] > 0.95  # the grader itself works on real images
    rows = guidance_sweep(runs["diffusion"], grader, scales=(0, 3), per_class=25, num_steps=20)
    unguided, guided = rows
    assert unguided["accuracy"] < 0.5  # s = 0 ignores the label: about 1 in 4 by chance
    assert guided["accuracy"] > unguided["accuracy"] + 0.3
    assert guided["accuracy"] > 0.7


def test_classifier_guidance_on_noisy_latents_steers_towards_the_label(runs, tmp_path):
    run = runs["diffusion"]
    # 800 steps: over training seeds 0-5 guidance at s = 10 then gained 0.28-0.40 in accuracy; after
    # 200 steps it gained 0.17-0.27, too close to the 0.2 asked below.
    classifier = train_noisy_classifier(run, NoisyClassifierRunConfig(
        dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2), train=quick(800, 64)),
        out_dir=runs["root"] / "noisy")
    reloaded = load_noisy_classifier(runs["root"] / "noisy" / "checkpoint.pt")
    latents = encode_images(run.vae, torch.zeros(2, 3, SIZE, SIZE))
    assert torch.equal(classifier(latents, torch.tensor([0, 10])), reloaded(latents, torch.tensor([0, 10])))
    grader = Grader.build(runs["grader_net"], num_images=60, image_size=SIZE, **OPTIONS)
    rows = guidance_sweep(run, grader, scales=(0, 10), per_class=15, classifier=reloaded, num_steps=20)
    assert rows[1]["accuracy"] > rows[0]["accuracy"] + 0.2
    assert load_noisy_classifier(runs["root"] / "noisy" / "checkpoint.pt", run=run) is not None
    other = DiffusionRunConfig(num_train_images=100, image_size=SIZE, dataset_options={"colours": ["red", "blue"]},
                               space="pixel", dit=DiTConfig(patch_size=4, hidden_dim=32, depth=1, num_heads=2),
                               train=quick(2, 8))
    pixel_run = train_image_diffusion(other)
    with pytest.raises(CheckpointError, match="classifies 4 classes of samples"):
        load_noisy_classifier(runs["root"] / "noisy" / "checkpoint.pt", run=pixel_run)
    # The class names are stored: the same classes in another label order are other classes.
    state = load_checkpoint(runs["root"] / "noisy" / "checkpoint.pt")
    assert state["config"]["class_names"] == run.class_names
    state["config"]["class_names"] = run.class_names[::-1]
    save_checkpoint(tmp_path / "reordered.pt", state)
    with pytest.raises(CheckpointError, match="classifies the classes blue cross, red cross, blue ring, red ring"):
        load_noisy_classifier(tmp_path / "reordered.pt", run=run)


def test_guidance_rescale_pulls_the_spread_of_guided_latents_back(runs):
    run = runs["diffusion"]
    labels = balanced_request(len(run.class_names), 4)
    _, plain = run.sample(labels=labels, guidance_scale=7.0, num_steps=10, rescale=0.0, return_samples=True)
    _, rescaled = run.sample(labels=labels, guidance_scale=7.0, num_steps=10, rescale=0.7, return_samples=True)
    _, conditional = run.sample(labels=labels, guidance_scale=1.0, num_steps=10, return_samples=True)
    assert torch.isfinite(rescaled).all()
    # s = 7 extrapolates: its latents spread wider than the conditional model's; rescaling towards the
    # conditional prediction's std must bring them closer to it (a rescale towards any other std would not).
    assert plain.std() > conditional.std()
    assert abs(rescaled.std() - conditional.std()) < 0.7 * abs(plain.std() - conditional.std())
    assert torch.equal(run.sample(labels=[0], guidance_scale=1.0, num_steps=5, rescale=0.7),
                       run.sample(labels=[0], guidance_scale=1.0, num_steps=5))  # s = 1 stays exact


def test_the_sampler_rescales_guidance_by_default_only_where_it_extrapolates(runs):
    run = runs["diffusion"]
    labels = balanced_request(len(run.class_names), 2)

    def draw(**options):
        return run.sample(labels=labels, num_steps=5, **options)

    # s > 1: the default is rescale by GUIDANCE_RESCALE, which changes the samples.
    assert torch.equal(draw(guidance_scale=3.0), draw(guidance_scale=3.0, rescale=GUIDANCE_RESCALE))
    assert not torch.equal(draw(guidance_scale=3.0), draw(guidance_scale=3.0, rescale=0.0))
    # s <= 1: none, so that s = 0 is the unconditional model and s = 1 the conditional one, bit for bit.
    for scale in (0.0, 0.5, 1.0):
        assert torch.equal(draw(guidance_scale=scale), draw(guidance_scale=scale, rescale=0.0))
    assert torch.equal(draw(guidance_scale=0.0), run.sample(num_samples=len(labels), num_steps=5))
    # Classifier guidance takes no rescale (asking for one is an error, the default is none).
    noisy = train_noisy_classifier(run, NoisyClassifierRunConfig(
        dit=DiTConfig(patch_size=1, hidden_dim=16, depth=1, num_heads=2), train=quick(2, 8)))
    assert torch.equal(draw(guidance_scale=3.0, classifier=noisy),
                       draw(guidance_scale=3.0, classifier=noisy, rescale=0.0))
    assert default_rescale(3.0) == GUIDANCE_RESCALE and default_rescale(3.0, classifier=noisy) == 0
    assert default_rescale(1.0) == 0 == default_rescale(0.0)


def test_balanced_request_asks_for_every_class_equally():
    assert balanced_request(3, 2).tolist() == [0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------------------------------------
#                                  Two processes under torchrun
# ---------------------------------------------------------------------------------------------

# Each process trains the VAE (DDP over gloo), measures the latent scale and loads the finished
# checkpoint. The rewrite that stores the scale is made slow: a second writer would show in the
# count, and a process that did not wait for the writer would load the unmeasured checkpoint.
TORCHRUN_VAE_SCRIPT = textwrap.dedent("""
    import sys, time, torch.distributed as dist
    import imagediff.pipeline as pipeline
    from imagediff.pipeline import VAERunConfig, load_vae, train_vae
    from imagediff.vae import vae_config
    from toydiff.distributed import leave_process_group
    from toydiff.training import TrainConfig

    writes = []
    save_checkpoint = pipeline.save_checkpoint

    def slow_save(path, state):
        writes.append(str(path))
        time.sleep(1.0)
        return save_checkpoint(path, state)

    pipeline.save_checkpoint = slow_save
    config = VAERunConfig(num_train_images=64, image_size=16, dataset_options={"shapes": ["ring", "cross"]},
                          vae=vae_config("tiny"),
                          train=TrainConfig(steps=4, batch_size=8, warmup_steps=1, log_every=2, checkpoint_every=0,
                                            progress=False, device="cpu"))
    run = train_vae(config, out_dir=sys.argv[1])
    measured = load_vae(sys.argv[1] + "/checkpoint.pt").vae.latent_scale  # refused if not yet measured
    assert float(measured) == float(run.vae.latent_scale) != 1.0
    for rank in range(dist.get_world_size()):  # one rank at a time: two prints at once can interleave
        if rank == dist.get_rank():
            print(f"rank {rank} writes {len(writes)}", flush=True)
        dist.barrier()
    leave_process_group()  # torn down in order: left to the exit, gloo aborts a rank now and then
""")


def test_train_vae_under_torchrun_stores_the_scale_from_one_process(tmp_path, torchrun):
    completed = torchrun(TORCHRUN_VAE_SCRIPT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(completed.stdout.split("\n")[:-1]) == ["rank 0 writes 1", "rank 1 writes 0"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["latent_scale_measured_on"] == 64


# ---------------------------------------------------------------------------------------------
#                                         Command line
# ---------------------------------------------------------------------------------------------


def run_module(*args):
    completed = subprocess.run([sys.executable, "-m", "imagediff", *args], capture_output=True, text=True, timeout=300)
    return completed.returncode, completed.stdout, completed.stderr


def test_cli_sample_writes_a_grid_for_a_prompt(runs, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["sample", "--checkpoint", str(runs["root"] / "latent" / "checkpoint.pt"), "--prompt", "red ring",
                 "--guidance", "3", "--num-samples", "4", "--steps", "5", "--out", str(out)])
    assert code == 0 and out.stat().st_size > 0
    tensor_out = tmp_path / "images.pt"
    assert main(["sample", "--checkpoint", str(runs["root"] / "latent" / "checkpoint.pt"), "--num-samples", "3",
                 "--steps", "5", "--out", str(tensor_out)]) == 0
    saved = torch.load(tensor_out, weights_only=True)
    assert saved["images"].shape == (3, 3, SIZE, SIZE) and saved["labels"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("arguments, message", [
    (["--prompt", "purple circle"], "known class names are red ring, blue ring, red cross, blue cross"),
    (["--guidance", "-1"], "expected a number >= 0"),
    (["--rescale", "2"], "expected a number in [0, 1]"),
    (["--num-samples", "0"], "expected a positive integer"),
    (["--out", "grid.jpg"], "must end in .png"),
])
def test_cli_sample_rejects_bad_arguments_with_one_line(runs, tmp_path, capsys, arguments, message):
    code = main(["sample", "--checkpoint", str(runs["root"] / "latent" / "checkpoint.pt"), "--steps", "2",
                 "--num-samples", "2", *[a.replace("grid.jpg", str(tmp_path / "grid.jpg")) for a in arguments]])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def test_cli_evaluate_prints_the_sweep_next_to_real_images(runs, capsys):
    code = main(["evaluate", "--checkpoint", str(runs["root"] / "latent" / "checkpoint.pt"),
                 "--classifier", str(runs["root"] / "evaluation" / "checkpoint.pt"), "--scales", "0,3",
                 "--per-class", "3", "--steps", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "CFG scale" in out and "real images" in out and len(out.strip().splitlines()) == 6
    assert out.startswith("every row with autoguidance w = 2")  # the run kept a guide: the default applies
    assert "guidance rescale: φ = 1 at s > 1 (the sampler's default)" in out

    def scale_three(*options):
        assert main(["evaluate", "--checkpoint", str(runs["root"] / "latent" / "checkpoint.pt"), "--autoguidance", "1",
                     "--classifier", str(runs["root"] / "evaluation" / "checkpoint.pt"), "--scales", "3",
                     "--per-class", "3", "--steps", "4", *options]) == 0
        return capsys.readouterr().out

    default, plain = scale_three(), scale_three("--rescale", "0")
    assert "autoguidance" not in default and "φ = 0 at every scale" in plain
    row = [line for line in default.splitlines() if line.strip().startswith("3 |")]
    assert len(row) == 1 and row[0] not in plain  # the rescaled samples grade otherwise (their distance)


def test_cli_missing_checkpoint_and_unknown_command_exit_2(tmp_path):
    code, _, error = run_module("sample", "--checkpoint", str(tmp_path / "nope.pt"))
    assert code == 2 and "no such file" in error and "Traceback" not in error
    code, _, error = run_module("paint")
    assert code == 2 and "invalid choice" in error
    code, _, error = run_module("train", "--vae", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "run"),
                                "--steps", "1", "--quiet")
    assert code == 2 and "does not exist" in error and "train-vae" in error


def test_cli_help_lists_the_commands():
    code, out, _ = run_module("--help")
    assert code == 0
    for command in ("train-vae", "train", "train-classifier", "sample", "evaluate"):
        assert command in out


def test_demo_trains_both_models_and_writes_its_figures(tmp_path, capsys):
    from imagediff.demo import run_demo
    report = run_demo(tmp_path, progress=False, quick=True)
    for name in ("reconstructions.png", "samples_cfg_0.png", "samples_cfg_1.png", "samples_cfg_3.png", "report.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert report["psnr_db"] > 5 and report["dit_train_seconds"] > 0  # 30 VAE steps: blurry, but finite
    assert (tmp_path / "vae" / "checkpoint.pt").exists() and (tmp_path / "latent" / "checkpoint.pt").exists()


def test_a_self_conditioned_run_trains_reloads_and_samples_with_its_estimates(runs, tmp_path, monkeypatch):
    config = DiffusionRunConfig(num_train_images=200, image_size=SIZE, dataset_options=OPTIONS,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"), self_condition=0.5,
                                dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2), train=quick(20, 16))
    trained = train_image_diffusion(config, out_dir=tmp_path / "selfcond")
    run = load_image_diffusion(tmp_path / "selfcond" / "checkpoint.pt")
    assert run.model.config.self_condition and run.model.patch_embedding.in_features == 2 * 4
    images = run.sample(labels=[0, 3], guidance_scale=3.0, num_steps=4, seed=3)
    assert torch.equal(images, trained.sample(labels=[0, 3], guidance_scale=3.0, num_steps=4, seed=3))
    passed = []
    forward = type(run.model).forward

    def spy(self, x_t, t, labels=None, previous_x0=None):
        passed.append(previous_x0)
        return forward(self, x_t, t, labels, previous_x0)

    monkeypatch.setattr(type(run.model), "forward", spy)
    assert torch.equal(run.sample(labels=[0, 3], guidance_scale=3.0, num_steps=4, seed=3), images)
    assert passed[0] is None and all(p is not None and p.shape == (4, 4, SIZE // 4, SIZE // 4) for p in passed[1:])
    with pytest.raises(ValueError, match="share of self-conditioned training batches"):
        DiffusionRunConfig(self_condition=2.0)


def test_the_run_keeps_its_early_ema_as_the_autoguidance_guide(runs, tmp_path, capsys):
    path = runs["root"] / "latent" / "checkpoint.pt"
    run, state = load_image_diffusion(path), load_checkpoint(path)
    step = run.config.guide_step()
    assert step == round(0.15 * 400) and sorted(state["snapshots"]) == [step]
    assert all(torch.equal(value, state["snapshots"][step][name]) for name, value in run.guide.state_dict().items())
    assert not torch.equal(run.guide.final_layer.linear.weight, run.model.final_layer.linear.weight)
    plain = run.sample(labels=[0, 3], guidance_scale=3.0, num_steps=4, seed=1)
    guided = run.sample(labels=[0, 3], guidance_scale=3.0, num_steps=4, seed=1, guide_scale=2.0)
    assert not torch.allclose(plain, guided, atol=1e-4)
    # A run stored before guides existed has none: the default is off, and asking for one is refused.
    del state["snapshots"]
    del state["config"]["guide_fraction"]
    save_checkpoint(tmp_path / "old.pt", state)
    old = load_image_diffusion(tmp_path / "old.pt")
    assert old.guide is None and old.default_guide_scale == 1.0 and old.config.guide_fraction == 0.0
    assert torch.equal(old.sample(labels=[0, 3], guidance_scale=3.0, num_steps=4, seed=1), plain)
    with pytest.raises(ValueError, match="autoguidance scale 2 asked for, but this run kept no guide"):
        old.sample(labels=[0], guide_scale=2.0, num_steps=2)
    assert main(["sample", "--checkpoint", str(tmp_path / "old.pt"), "--autoguidance", "2", "--out",
                 str(tmp_path / "grid.png")]) == 2
    assert "--autoguidance 2: this run kept no guide" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"guide_fraction is the share of training .* in \[0, 1\)"):
        DiffusionRunConfig(guide_fraction=1.0)


def test_the_guide_snapshot_is_asked_of_one_training_not_written_into_the_config(runs, tmp_path):
    config = DiffusionRunConfig(num_train_images=200, image_size=SIZE, dataset_options=OPTIONS,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"),
                                dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2), train=quick(40, 16))
    assert train_image_diffusion(config).guide is not None and config.train.snapshot_steps == ()
    shorter = replace(config, train=replace(config.train, steps=8))  # as the bench's pixel run copies the recipe
    assert train_image_diffusion(shorter).config.guide_step() == 1


def test_an_angle_conditioned_run_draws_an_angle_per_sample_or_takes_the_one_asked_for(runs, tmp_path, monkeypatch,
                                                                                         capsys):
    config = DiffusionRunConfig(num_train_images=200, image_size=SIZE, dataset_options=OPTIONS,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"),
                                dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2, angle_conditioning=True),
                                train=quick(40, 16))
    trained = train_image_diffusion(config, out_dir=tmp_path / "angles")
    run = load_image_diffusion(tmp_path / "angles" / "checkpoint.pt")
    low, high = run.angle_range
    assert run.model.config.angle_conditioning and 0 <= low < 0.2 and 2 * math.pi - 0.2 < high < 2 * math.pi
    images = run.sample(labels=[0, 3, 1], guidance_scale=3.0, guide_scale=2.0, num_steps=3, seed=4)
    assert torch.equal(images, trained.sample(labels=[0, 3, 1], guidance_scale=3.0, guide_scale=2.0, num_steps=3,
                                              seed=4))
    seen = []
    forward = type(run.model).forward

    def spy(self, x_t, t, labels=None, previous_x0=None, angles=None):
        seen.append(angles)
        return forward(self, x_t, t, labels, previous_x0, angles)

    monkeypatch.setattr(type(run.model), "forward", spy)
    run.sample(labels=[0, 3, 1], guidance_scale=3.0, guide_scale=2.0, num_steps=3, seed=4)
    drawn = seen[0][:3]  # the first call: the conditional and unconditional halves, 6 rows
    assert ((drawn >= low) & (drawn <= high)).all() and len(set(drawn.tolist())) == 3
    assert all(torch.equal(a, drawn.repeat(len(a) // 3)) for a in seen)  # model, guide, every step: the same
    seen.clear()
    turned = run.sample(labels=[0, 3, 1], guidance_scale=3.0, num_steps=3, seed=4, angles=0.5)
    assert all(torch.equal(a, torch.full_like(a, 0.5)) for a in seen) and not torch.allclose(turned, images)
    with pytest.raises(ValueError, match=r"one number \(radians\) or one per sample \(3\), got 2 values"):
        run.sample(labels=[0, 3, 1], num_steps=2, angles=[0.1, 0.2])
    with pytest.raises(ValueError, match="angles must be finite numbers of radians"):
        run.sample(labels=[0, 3, 1], num_steps=2, angles=float("nan"))
    # A run that draws at every angle, not told any: nothing to choose.
    plain = train_image_diffusion(replace(config, canonical_frame=False, dit=replace(config.dit, angle_conditioning=False),
                                          train=quick(4, 16)), out_dir=tmp_path / "plain")
    with pytest.raises(ValueError, match="trained without angle conditioning: it cannot be given angles"):
        plain.sample(labels=[0], num_steps=2, angles=0.5)
    checkpoint = str(tmp_path / "angles" / "checkpoint.pt")
    assert main(["sample", "--checkpoint", checkpoint, "--angle", "30", "--steps", "2", "--num-samples", "2",
                 "--out", str(tmp_path / "turned.pt")]) == 0
    asked = run.sample(labels=[0, 1], guidance_scale=3.0, guide_scale=run.default_guide_scale, num_steps=2, seed=0,
                       angles=math.radians(30))
    assert torch.equal(torch.load(tmp_path / "turned.pt")["images"], asked)
    assert main(["sample", "--checkpoint", str(tmp_path / "plain" / "checkpoint.pt"), "--angle", "30",
                 "--out", str(tmp_path / "plain.png")]) == 2
    assert "--angle 30: this run was trained neither with --angle-conditioning nor in the canonical frame" \
        in capsys.readouterr().err
    assert main(["sample", "--checkpoint", checkpoint, "--angle", "nan", "--out", str(tmp_path / "nan.png")]) == 2
    assert "expected a finite number, got nan" in capsys.readouterr().err
    # Data of 4 orientations: the sampler draws among them, and refuses an angle between them.
    four = train_image_diffusion(replace(config, dataset_options={**OPTIONS, "num_angles": 4}))
    assert torch.allclose(torch.tensor(four.angle_values), torch.arange(4) * (math.pi / 2))
    drawn = four.angles_tensor(None, 400, torch.Generator().manual_seed(0))
    quarters = drawn / (math.pi / 2)
    assert torch.allclose(quarters, torch.round(quarters), atol=1e-5)
    assert len(set(drawn.tolist())) == 4
    four.sample(labels=[0], num_steps=2, angles=math.pi / 2 + 2 * math.pi)  # a trained angle, a turn later
    with pytest.raises(ValueError, match=r"trained on the angles \[0.0, 90.0, 180.0, 270.0\] degrees only; asked for \[45.0\]"):
        four.sample(labels=[0], num_steps=2, angles=math.pi / 4)
    glyphs = replace(config, dataset="glyphs", dataset_options={"channels": 3})
    with pytest.raises(DataError, match="the glyphs data set does not"):
        train_image_diffusion(glyphs)


def test_a_run_in_the_shapes_own_frame_learns_them_upright_and_turns_each_sample(runs, tmp_path):
    from imagediff.data import make_dataset
    from imagediff.data.shapes import turn_images
    from imagediff.pipeline import diffusion_training_set
    config = DiffusionRunConfig(num_train_images=200, image_size=SIZE, dataset_options=OPTIONS, canonical_frame=True,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"),
                                dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2),
                                train=quick(40, 16))
    # What the DiT learns: the latents of the same draws at angle 0, labelled with the angles the data drew.
    vae = runs["vae"].vae
    latents, data = diffusion_training_set(config, vae)
    rotated = make_dataset("shapes", 200, seed=0, image_size=SIZE, **OPTIONS)
    upright = make_dataset("shapes", 200, seed=0, image_size=SIZE, rotate=False, **OPTIONS)
    assert torch.equal(latents, encode_images(vae, upright.images)) and torch.equal(data.angles, rotated.angles)
    assert torch.equal(data.labels, rotated.labels)

    trained = train_image_diffusion(config, out_dir=tmp_path / "upright")
    run = load_image_diffusion(tmp_path / "upright" / "checkpoint.pt")
    assert run.config.canonical_frame and not run.model.config.angle_conditioning  # the DiT is told no angle
    low, high = run.angle_range
    assert 0 <= low < 0.2 and 2 * math.pi - 0.2 < high < 2 * math.pi
    # Each decoded sample is turned to an angle drawn from the training range (the generator's first draw).
    images, latents = run.sample(labels=[0, 3, 1, 2], guidance_scale=3.0, num_steps=3, seed=4, return_samples=True)
    drawn = run.angles_tensor(None, 4, torch.Generator().manual_seed(4))
    assert len(set(drawn.tolist())) == 4
    torch.testing.assert_close(images, turn_images(run.to_images(latents), drawn))
    assert not torch.allclose(images, run.to_images(latents), atol=0.05)
    assert torch.equal(images, trained.sample(labels=[0, 3, 1, 2], guidance_scale=3.0, num_steps=3, seed=4))
    asked, latents = run.sample(labels=[0, 3], num_steps=3, seed=4, angles=0.5, return_samples=True)
    torch.testing.assert_close(asked, turn_images(run.to_images(latents), torch.full((2,), 0.5)))
    # A run stored before the option learned every angle: it reads back off, and its samples are not turned.
    state = load_checkpoint(tmp_path / "upright" / "checkpoint.pt")
    del state["config"]["canonical_frame"]
    del state["config"]["dit"]["mlp_activation"]
    save_checkpoint(tmp_path / "before.pt", state)
    before = load_image_diffusion(tmp_path / "before.pt")
    assert before.config.canonical_frame is False
    assert before.model.config.mlp_activation == "gelu_tanh" and run.model.config.mlp_activation == "gelu"
    images, latents = before.sample(labels=[0, 3], num_steps=3, seed=4, return_samples=True)
    assert torch.equal(images, before.to_images(latents))

    with pytest.raises(DataError, match="canonical_frame needs a data set that records each image's angle"):
        train_image_diffusion(replace(config, dataset="glyphs", dataset_options={"channels": 3}))
    with pytest.raises(ValueError, match="canonical_frame and dit.angle_conditioning exclude each other"):
        replace(config, dit=DiTConfig(angle_conditioning=True))
    told_after = replace(config)
    told_after.dit = DiTConfig(angle_conditioning=True)  # set after the config was made: refused when training starts
    with pytest.raises(ValueError, match="canonical_frame and dit.angle_conditioning exclude each other"):
        train_image_diffusion(told_after)


def test_a_run_with_factored_labels_trains_reloads_and_refuses_names_it_cannot_split(runs, tmp_path):
    config = DiffusionRunConfig(num_train_images=200, image_size=SIZE, dataset_options=OPTIONS, factor_labels=True,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"),
                                dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2), train=quick(20, 16))
    trained = train_image_diffusion(config, out_dir=tmp_path / "factored")
    run = load_image_diffusion(tmp_path / "factored" / "checkpoint.pt")
    # OPTIONS: rings and crosses in red and blue, named "<colour> <shape>".
    assert run.model.config.label_parts == [[0, 0], [1, 0], [0, 1], [1, 1]] and run.model.label_embedding is None
    assert torch.equal(run.sample(labels=[0, 3], guidance_scale=3.0, num_steps=3, seed=2),
                       trained.sample(labels=[0, 3], guidance_scale=3.0, num_steps=3, seed=2))
    with pytest.raises(DataError, match="the same number of words.*train with factor_labels=False"):
        build_dit(config, (4, 4, 4), 2, ["red ring", "cross"])


def test_vae_on_moves_a_copy_and_leaves_the_callers_vae_where_it_was():
    from imagediff.pipeline import vae_on
    from imagediff.vae import VAE
    vae = VAE(vae_config("tiny"))
    assert vae_on(vae, "cpu") is vae  # already there: no copy
    moved = vae_on(vae, "meta")
    assert moved is not vae and moved.latent_scale.device.type == "meta"
    assert all(p.device.type == "cpu" for p in vae.parameters())


def test_the_training_set_is_encoded_where_the_dit_trains(runs, encoding_device):
    """Encoding the data set on the CPU before a GPU run took minutes: the VAE goes to the training device
    (``process_device``; "meta" stands in for a GPU here) before it encodes anything."""
    import imagediff.classifier as classifier
    import imagediff.pipeline as pipeline

    config = DiffusionRunConfig(num_train_images=20, image_size=SIZE, dataset_options=OPTIONS,
                                vae_checkpoint=str(runs["root"] / "vae" / "checkpoint.pt"),
                                dit=DiTConfig(patch_size=1, hidden_dim=32, depth=1, num_heads=2), train=quick(4, 4))
    for given in (None, runs["vae"].vae):  # loaded from the checkpoint, or handed over by the caller
        assert encoding_device(partial(train_image_diffusion, config, vae=given), pipeline, pipeline,
                               "encode_images") == "meta"
    assert runs["vae"].vae.latent_scale.device.type == "cpu"  # the caller's VAE stayed put
    # The noisy classifier learns the same latents, encoded where it trains.
    noisy = partial(train_noisy_classifier, runs["diffusion"], NoisyClassifierRunConfig(train=quick(4, 4)))
    assert encoding_device(noisy, classifier, pipeline, "encode_images") == "meta"
    assert runs["diffusion"].vae.latent_scale.device.type == "cpu"
