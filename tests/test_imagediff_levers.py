"""The lever table: variants are field=value changes checked before any training; grading per shape is exact."""
import json

import pytest
import torch

from imagediff.classifier import EvaluationClassifierConfig, EvaluationRunConfig
from imagediff.cli import main as imagediff_main
from imagediff.levers import LeverError, apply_variant, grade_by_shape, run_levers, variant_slug
from imagediff.pipeline import DiffusionRunConfig, VAERunConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_variant_changes_exactly_the_fields_it_names():
    base = DiffusionRunConfig()
    config = apply_variant(base, "weighting=uniform train.batch_size=64 dit.patch_size=1 label_dropout=0.2")
    assert (config.weighting, config.train.batch_size, config.dit.patch_size, config.label_dropout) == \
        ("uniform", 64, 1, 0.2)
    assert config.train.learning_rate == base.train.learning_rate and config.dit.hidden_dim == base.dit.hidden_dim
    # The base is left alone, and "default" is the base.
    assert (base.weighting, base.train.batch_size, base.dit.patch_size) == ("min_snr", 128, 2)
    assert apply_variant(base, "default") == base
    assert apply_variant(base, "train.compile=true").train.compile is True
    config = apply_variant(base, "timestep_sampling=logit_normal logit_mean=0.5")
    assert (config.timestep_sampling, config.logit_mean, config.logit_std) == ("logit_normal", 0.5, 1.0)
    assert apply_variant(base, 'dataset_options={"rotate":false}').dataset_options == {"rotate": False}
    assert base.canonical_frame is True and apply_variant(base, "canonical_frame=false").canonical_frame is False
    told = apply_variant(base, "canonical_frame=false dit.angle_conditioning=true")
    assert told.dit.angle_conditioning and told.canonical_frame is False


@pytest.mark.parametrize("variant, message", [
    ("train.batchsize=64", "'train.batchsize' is not a field of TrainConfig; its fields are .*batch_size"),
    ("dit.patch_size=two", "dit.patch_size is a number \\(int\\), got 'two'"),
    ("dit.patch_size=3", "dit.patch_size=3: .*not divisible by patch_size=3"),
    ("vae.base_channels=4", "only dit.<field> and train.<field> are nested"),
    ("weighting", "a change is written field=value"),
    ("train.compile=maybe", "train.compile is true or false"),
    ("dataset_options=rotate", "dataset_options is a JSON object"),
    ("canonical_frame=yes", "canonical_frame is true or false, got 'yes'"),
    ("dit.angle_conditioning=true",
     "dit.angle_conditioning=true: canonical_frame and dit.angle_conditioning exclude each other"),
])
def test_a_wrong_variant_is_named_with_what_was_expected(variant, message):
    with pytest.raises(LeverError, match=message):
        apply_variant(DiffusionRunConfig(), variant)


def test_variant_folders_are_readable_and_distinct():
    assert variant_slug("default") == "default"
    assert variant_slug("train.batch_size=64 weighting=min_snr") == "batch_size64_weightingmin_snr"
    assert variant_slug("dit.patch_size=1") != variant_slug("dit.patch_size=2")
    assert variant_slug("train.learning_rate=0.004") == "learning_rate0.004"  # a value's dot is not a path's


def test_grading_by_shape_counts_each_confusion():
    names = ["red circle", "blue circle", "red square", "blue square"]
    labels = torch.tensor([0, 1, 2, 3, 2, 3])
    # Squares: one right, one the wrong colour (red asked, blue seen), two taken for circles.
    predicted = torch.tensor([0, 1, 0, 3, 3, 1])
    grade = grade_by_shape(names, labels, predicted)
    assert grade["per_shape_accuracy"] == {"circle": 1.0, "square": 0.25}
    assert grade["shape_confusion"] == {"circle": {"circle": 2, "square": 0}, "square": {"circle": 2, "square": 2}}
    assert grade["colour_accuracy"] == pytest.approx(5 / 6)


def test_the_command_refuses_a_bad_variant_before_training_anything(tmp_path, capsys):
    status = imagediff_main(["levers", "--out", str(tmp_path / "levers"), "--budget", "5", "default",
                             "weighting=heavy"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and "weighting" in error and "heavy" in error
    assert not (tmp_path / "levers" / "vae").exists()
    status = imagediff_main(["levers", "--out", str(tmp_path / "levers"), "--budget", "5",
                             "timestep_sampling=logit_normal logit_std=-1"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and "logit_std must be positive" in error
    assert imagediff_main(["levers", "--budget", "0", "default"]) == 2
    assert "expected a number > 0" in capsys.readouterr().err


def test_a_small_lever_table_is_trained_graded_and_written(tmp_path):
    options = {"shapes": ["ring", "cross"], "colours": ["red", "blue"]}
    base = DiffusionRunConfig(image_size=16, dataset_options=options, num_train_images=300)
    base.train.batch_size, base.train.compile = 16, False  # compiling would outlast a one-second budget
    vae = VAERunConfig(image_size=16, dataset_options=options, num_train_images=300)
    vae.train.steps, vae.train.batch_size = 20, 16
    grader = EvaluationRunConfig(image_size=16, dataset_options=options, num_train_images=300,
                                 classifier=EvaluationClassifierConfig(width=8))
    grader.train.steps = 20
    rows = run_levers(["default", "train.batch_size=8"], 1.0, tmp_path, base=base, per_class=2, num_steps=4,
                      vae_config=vae, grader_config=grader)
    assert [r["variant"] for r in rows] == ["default", "train.batch_size=8"]
    for row in rows:
        assert row["steps"] >= 4 and row["steps"] % 4 == 0
        assert len(row["curve"]) == 2 and row["curve"][0]["step"] == row["steps"] // 2
        assert set(row["per_shape_accuracy"]) == {"ring", "cross"}
        assert sum(sum(seen.values()) for seen in row["shape_confusion"].values()) == 2 * 4  # every sample graded
    stored = json.loads((tmp_path / "levers.json").read_text())
    assert [r["variant"] for r in stored] == ["default", "train.batch_size=8"]
    assert "| `train.batch_size=8` |" in (tmp_path / "levers.md").read_text()
    assert (tmp_path / "levers.png").exists() and (tmp_path / "batch_size8" / "samples.png").exists()
