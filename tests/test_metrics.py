import pytest
import torch

from toydiff.data import DATASETS, make_dataset
from toydiff.metrics import compare_to_data, energy_distance, precision, recall, sliced_wasserstein


def test_energy_distance_known_value_in_one_dimension():
    # Two point masses at 0 and d: 2|d| - 0 - 0.
    x, y = torch.zeros(10, 1), torch.full((10, 1), 3.0)
    assert energy_distance(x, y) == pytest.approx(6.0)
    assert sliced_wasserstein(x, y) == pytest.approx(3.0)  # in 1-D every direction is ±1


def test_metrics_separate_shifted_data_from_the_floor():
    a, _ = make_dataset("spiral", 2000, seed=1)
    b, _ = make_dataset("spiral", 2000, seed=2)
    result = compare_to_data(a + 0.3, b, make_dataset("spiral", 2000, seed=3)[0])
    for name in ("energy_distance", "sliced_wasserstein"):  # distances: far above their floor
        assert result[name]["value"] > 3 * result[name]["floor"], name
    for name in ("precision", "recall"):  # shares: far below their floor
        assert result[name]["value"] < result[name]["floor"] - 0.1, name
    assert energy_distance(a, b) < 0.01


def test_precision_sees_blur_and_recall_sees_missing_modes():
    data, _ = make_dataset("spiral", 2000, seed=1)
    fresh, fresh_labels = make_dataset("spiral", 2000, seed=2)
    blurred = fresh + 0.25 * torch.randn_like(fresh)
    one_arm = fresh[fresh_labels == 0]
    assert precision(fresh, data) > 0.97 and recall(fresh, data) > 0.97
    assert precision(blurred, data) < 0.9                          # partly off the arms
    assert precision(one_arm, data) > 0.97 and recall(one_arm, data) < 0.45  # on the data, but one arm of three


def test_metrics_refuse_bad_points():
    with pytest.raises(ValueError, match="NaN"):
        energy_distance(torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="point sets"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 3))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_datasets_are_seeded_standardised_and_labelled(name):
    points, labels = make_dataset(name, 5000, seed=7)
    again, _ = make_dataset(name, 5000, seed=7)
    other, _ = make_dataset(name, 5000, seed=8)
    assert points.shape == (5000, 2) and points.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(points, again) and not torch.equal(points, other)
    assert points.mean(0).abs().max() < 0.06 and (points.std(0) - 1).abs().max() < 0.06
    assert set(labels.tolist()) == set(range(DATASETS[name].num_classes))


def test_spiral_labels_are_the_arms():
    # Points of one arm are closer to each other (along the arm) than the arms' centres are apart at
    # the same radius: the nearest neighbour of a point almost always shares its label.
    points, labels = make_dataset("spiral", 3000, seed=0)
    distances = torch.cdist(points, points)
    distances.fill_diagonal_(float("inf"))
    neighbour = distances.argmin(1)
    assert (labels[neighbour] == labels).float().mean() > 0.95


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset"):
        make_dataset("mnist", 10)
