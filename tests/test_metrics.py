import numpy as np
import pytest
import torch

from errors import ConfigError
from supernet.metrics import REWARDS, ConfusionMatrix, get_reward, metrics_from_matrix

# true \ pred   0  1  2
#         0     3  1  0
#         1     0  2  0
#         2     1  0  0      (class 2 is never predicted)
MATRIX = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_metrics_against_hand_computed_values():
    m = metrics_from_matrix(MATRIX)
    assert m.accuracy == pytest.approx(5 / 7)
    # precision: 3/4, 2/3, and 0 for class 2 (present in the truth, never predicted)
    assert m.mean_precision == pytest.approx((3 / 4 + 2 / 3 + 0) / 3)
    # recall: 3/4, 2/2, 0/1
    assert m.mean_recall == pytest.approx((3 / 4 + 1 + 0) / 3)
    # IoU: 3/(4+4-3), 2/(2+3-2), 0/(1+0-0)
    assert m.per_class_iou == pytest.approx([3 / 5, 2 / 3, 0.0])
    assert m.miou == pytest.approx((3 / 5 + 2 / 3 + 0) / 3)
    # mIoU+: background {0} vs objects {1, 2}: [[3, 1], [1, 2]]
    assert m.miou_plus == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert m.pixels == 7


def test_classes_absent_from_truth_and_prediction_are_left_out():
    matrix = np.zeros((4, 4), dtype=int)
    matrix[:3, :3] = MATRIX
    m = metrics_from_matrix(matrix)
    assert m.per_class_iou[3] is None
    assert m.miou == pytest.approx(metrics_from_matrix(MATRIX).miou)
    assert m.mean_recall == pytest.approx(metrics_from_matrix(MATRIX).mean_recall)
    assert m.mean_precision == pytest.approx(metrics_from_matrix(MATRIX).mean_precision)


def test_predicted_but_absent_class_counts_as_zero_iou_and_precision():
    # class 1 is predicted once but never true
    m = metrics_from_matrix(np.array([[3, 1], [0, 0]]))
    assert m.per_class_iou == pytest.approx([3 / 4, 0.0])
    assert m.mean_precision == pytest.approx((1 + 0) / 2)
    # class 1 is present (predicted), so its recall counts, as 0
    assert m.mean_recall == pytest.approx((3 / 4 + 0) / 2)


def test_an_all_background_model_cannot_beat_one_that_finds_the_objects():
    # 90 % background, two object classes; one model predicts only background, the other
    # finds most object pixels at the cost of a few background pixels.
    lazy = np.array([[90, 0, 0], [6, 0, 0], [4, 0, 0]])
    real = np.array([[86, 2, 2], [1, 5, 0], [1, 0, 3]])
    lazy_m, real_m = metrics_from_matrix(lazy), metrics_from_matrix(real)
    assert lazy_m.mean_precision == pytest.approx(0.9 / 3)
    assert real_m.mean_precision > lazy_m.mean_precision
    assert real_m.mean_recall > lazy_m.mean_recall


def test_confusion_matrix_accumulates_pixels_and_skips_ignore_label():
    target = torch.tensor([[0, 0, 0, 0], [1, 1, 2, 255]])
    pred = torch.tensor([[0, 0, 0, 1], [1, 1, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred[:1], target[:1])
    cm.update(pred[1:], target[1:])
    np.testing.assert_array_equal(cm.matrix, [[3, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert cm.compute().accuracy == pytest.approx(5 / 7)


def test_confusion_matrix_takes_logits():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 2, 0, 0] = 1.0
    logits[0, 1, 0, 1] = 1.0
    cm = ConfusionMatrix(3)
    cm.update(logits, torch.tensor([[[2, 0]]]))
    np.testing.assert_array_equal(cm.matrix, [[0, 1, 0], [0, 0, 0], [0, 0, 1]])


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ConfusionMatrix(3).update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0]))


def test_perfect_prediction_scores_one_everywhere():
    target = torch.randint(0, 5, (2, 8, 8))
    cm = ConfusionMatrix(5)
    cm.update(target, target)
    m = cm.compute()
    assert (m.accuracy, m.mean_precision, m.mean_recall, m.miou, m.miou_plus) == (1, 1, 1, 1, 1)


def test_mious_plus_with_another_background_id():
    m = metrics_from_matrix(MATRIX, background=2)
    # background {2} vs objects {0, 1}: [[0, 1], [0, 6]]
    assert m.miou_plus == pytest.approx((0 / 1 + 6 / 7) / 2)


def test_rewards_by_name():
    m = metrics_from_matrix(MATRIX)
    assert set(REWARDS) == {"accuracy", "miou", "miou_plus"}
    assert get_reward("accuracy")(m) == m.accuracy
    assert get_reward("miou")(m) == m.miou
    assert get_reward("miou_plus")(m) == m.miou_plus
    with pytest.raises(ConfigError, match="unknown reward 'iou'; choose one of"):
        get_reward("iou")


def test_confusion_matrix_rejects_out_of_range_predictions():
    with pytest.raises(ValueError, match="predicted class ids"):
        ConfusionMatrix(3).update(torch.tensor([3]), torch.tensor([0]))
