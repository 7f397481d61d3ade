"""The core modules' contracts that their type declarations now state: the label reader the
adapters hand to targets.py returns three values, metric specs name themselves from their
arguments, and Keras identifiers map through their own kind's table. No framework needed."""

from __future__ import annotations

import math

import pytest

import fitkit.metrics as fm
from fitkit import identifiers, targets
from fitkit.errors import FitkitValueError
from fitkit.specs import loss_spec

NAN = math.nan


def _no_read() -> list[float]:
    raise AssertionError("this check must not read the values")


def test_label_range_is_min_max_and_a_fraction():
    """The adapters' label_range returns [min, max, a non-whole label or NaN]: all three read."""
    sparse = loss_spec("sparse_categorical_crossentropy")
    mode = targets.check_targets(sparse, (8, 4), (8,), lambda: [0.0, 3.0, NAN])
    assert mode == targets.TargetMode("sparse", False)
    with pytest.raises(FitkitValueError, match=r"whole-number class labels, but y holds 1\.5"):
        targets.check_targets(sparse, (8, 4), (8,), lambda: [0.0, 3.0, 1.5])
    with pytest.raises(FitkitValueError, match="class label 4 is outside the network's output"):
        targets.check_targets(sparse, (8, 4), (8,), lambda: [0.0, 4.0, NAN])
    with pytest.raises(FitkitValueError, match="class label -1 is outside"):
        targets.check_targets(sparse, (8, 4), (8,), lambda: [-1.0, 2.0, NAN])


def test_zero_one_targets_read_the_same_three_values():
    bce = loss_spec("bce")
    assert targets.check_targets(bce, (8, 1), (8, 1), lambda: [0.0, 1.0, NAN]).task == "binary"
    with pytest.raises(FitkitValueError, match=r"takes targets in \[0, 1\].*holds 2"):
        targets.check_targets(bce, (8, 1), (8, 1), lambda: [0.0, 2.0, NAN])


def test_check_output_passes_the_adapters_lists_through():
    """check_output as checks.py calls it: each reader returns a list, as the adapters do."""
    sparse = loss_spec("sparse_categorical_crossentropy")
    mode, width = targets.check_output(
        sparse, True, (8, 4), (8,), lambda: [0.0, 3.0, NAN], lambda: [0.0, 1.0]
    )
    assert (mode.task, width) == ("sparse", 4)
    with pytest.raises(FitkitValueError, match="whole-number"):
        targets.check_output(
            sparse, True, (8, 4), (8,), lambda: [0.0, 3.0, 0.25], lambda: [0.0, 1.0]
        )
    with pytest.raises(FitkitValueError, match="they look like logits"):
        targets.check_output(
            sparse, True, (8, 4), (8,), lambda: [0.0, 3.0, NAN], lambda: [-2.0, 3.0]
        )
    # a regression loss reads no labels and no outputs
    mse = loss_spec("mse")
    assert targets.check_output(mse, True, (8, 1), (8, 1), _no_read, _no_read)[1] == 1


def test_metric_specs_name_themselves_from_their_arguments():
    assert fm.TopKAccuracy(k=3).name == "top_3_accuracy"
    assert fm.TopKAccuracy().name == "top_5_accuracy"
    assert fm.TopKAccuracy(k=2, name="top2").name == "top2"
    assert fm.R2Score().name == "r2_score"
    assert fm.F1Score().name == "f1_score"
    assert fm.Precision(threshold=0.3).name == "precision"
    assert fm.AUC(bins=10).name == "auc"
    assert fm.Accuracy().name == "accuracy"


def test_keras_identifiers_map_through_their_kinds_table():
    opt = identifiers.parse("optimizer", {"class_name": "Adam", "config": {"beta_1": 0.8}})
    assert identifiers.torch_optimizer(opt) == ("adam", {"betas": (0.8, 0.999)})
    loss = identifiers.parse(
        "loss", {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}
    )
    assert identifiers.portable_loss(loss) == "cross_entropy"
    metric = identifiers.parse(
        "metric", {"class_name": "TopKCategoricalAccuracy", "config": {"k": 3}}
    )
    spec = identifiers.portable_metric(metric)
    assert (spec.name, spec.kwargs) == ("top_k_categorical_accuracy", {"k": 3})
    unknown = identifiers.KerasIdentifier("loss", "FocalLoss")
    with pytest.raises(FitkitValueError, match="Unknown Keras loss class 'FocalLoss'"):
        identifiers.portable_loss(unknown)
