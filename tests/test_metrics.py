import numpy as np
import pytest
import torch

from seqtrain.metrics import classification_metrics, confusion_image, confusion_matrix

TARGETS = torch.tensor([0, 0, 0, 1, 1, 2])
PREDICTIONS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_confusion_matrix_rows_are_true_classes():
    expected = torch.tensor([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(confusion_matrix(TARGETS, PREDICTIONS, 4), expected)


def test_summed_batches_give_the_same_matrix_as_one_pass():
    halves = confusion_matrix(TARGETS[:3], PREDICTIONS[:3], 3) + confusion_matrix(TARGETS[3:], PREDICTIONS[3:], 3)
    assert torch.equal(halves, confusion_matrix(TARGETS, PREDICTIONS, 3))


def test_macro_f1_matches_a_hand_computed_case():
    # class a: P = 2/2, R = 2/3, F1 = 0.8;  b: P = 1/2, R = 1/2, F1 = 0.5;  c: P = 1/2, R = 1/1, F1 = 2/3
    # class d never occurs and is left out of the average.
    metrics = classification_metrics(confusion_matrix(TARGETS, PREDICTIONS, 4), ["a", "b", "c", "d"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["precision/a"] == pytest.approx(1.0) and metrics["recall/a"] == pytest.approx(2 / 3)
    assert metrics["precision/c"] == pytest.approx(0.5) and metrics["recall/c"] == pytest.approx(1.0)
    assert metrics["precision/d"] == 0.0 and metrics["recall/d"] == 0.0


def test_a_class_never_predicted_scores_zero_not_nan():
    metrics = classification_metrics(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2))
    assert metrics["precision/1"] == 0.0 and metrics["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert all(np.isfinite(v) for v in metrics.values())


def test_confusion_image_is_an_rgb_array():
    image = confusion_image(confusion_matrix(TARGETS, PREDICTIONS, 3), ["negative", "neutral", "positive"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 100
    assert image.min() < 100 < image.max()  # not blank: dark cells or text on a light background
