"""Every user error is a FitkitError that names the problem and the fix, raised before any step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_unchanged as _unchanged
from conftest import compiled as _compiled
from conftest import make_classes

import fitkit


def test_fit_before_compile(kit, regression):
    model = fitkit.Model(kit.mlp(4, 1))
    with pytest.raises(fitkit.NotCompiledError, match=r"model.compile\("):
        model.fit(*regression, verbose=0)
    with pytest.raises(fitkit.NotCompiledError):
        model.validate(*regression)


@pytest.mark.parametrize(
    "arg, value, listed",
    [
        ("optimizer", "adamx", "'rmsprop'"),
        ("loss", "mean_squared_log", "'cross_entropy'"),
        ("metrics", ["f2_scor"], "'top_k_accuracy'"),
    ],
)
def test_unknown_strings_list_the_valid_names(kit, arg, value, listed):
    model = fitkit.Model(kit.mlp(4, 1))
    kwargs = {"optimizer": "adam", "loss": "mse", "metrics": None, arg: value}
    with pytest.raises(
        fitkit.FitkitValueError, match=repr(value if isinstance(value, str) else value[0])
    ) as info:
        model.compile(**kwargs)
    assert listed in str(info.value)


def test_length_mismatch_gives_both_lengths(kit, regression):
    model, _ = _compiled(kit)
    x, y = regression
    with pytest.raises(fitkit.FitkitValueError, match="x has 256 samples, y has 100"):
        model.fit(x, y[:100], verbose=0)


def test_missing_y_for_array_x(kit, regression):
    model, _ = _compiled(kit)
    with pytest.raises(fitkit.FitkitValueError, match="y is missing"):
        model.fit(regression[0], verbose=0)


def test_empty_data(kit):
    model, _ = _compiled(kit)
    with pytest.raises(fitkit.FitkitValueError, match="empty"):
        model.fit(np.zeros((0, 4), "float32"), np.zeros((0, 1), "float32"), verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match="yielded no batches"):
        model.fit([], verbose=0)


def test_native_torch_loss_that_would_broadcast_is_refused(torch_kit, regression):
    net = torch_kit.mlp(4, 1)
    model = fitkit.Model(net).compile("sgd", torch_kit.torch.nn.MSELoss())
    x, y = regression
    before = torch_kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=r"\(32, 1\).*\(32,\).*reshape") as info:
        model.fit(x, y[:, 0], verbose=0)
    assert "broadcast" in str(info.value)
    _unchanged(torch_kit, net, before)


def test_label_outside_output_width_names_label_and_width(kit):
    x, y = make_classes(classes=3)
    y = y.copy()
    y[-1] = 5  # in the last batch: found before training, not when reached
    model, net = _compiled(kit, n_out=3, loss="cross_entropy")
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=r"label 5.*width 3"):
        model.fit(x, y, verbose=0)
    _unchanged(kit, net, before)


def test_one_hot_targets_for_a_sparse_loss_point_to_the_fix(kit):
    x, y = make_classes(classes=3)
    model, net = _compiled(kit, n_out=3, loss="cross_entropy")
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match="one-hot") as info:
        model.fit(x, np.eye(3, dtype="float32")[y], verbose=0)
    assert "argmax" in str(info.value) and "categorical_crossentropy" in str(info.value)
    _unchanged(kit, net, before)


def test_probability_loss_on_logits_points_to_the_logits_loss(kit):
    x, y = make_classes(classes=2)
    model, net = _compiled(kit, n_out=1, loss="bce")
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match="bce_with_logits"):
        model.fit(x * 50, y[:, None].astype("float32"), verbose=0)
    _unchanged(kit, net, before)


def test_non_numeric_dataframe_columns_are_named(kit, regression):
    x, y = regression
    frame = pd.DataFrame(x, columns=list("abcd")).assign(city=["x"] * len(x))
    model, _ = _compiled(kit, n_in=5)
    with pytest.raises(fitkit.FitkitValueError, match=r"\['city'\]"):
        model.fit(frame, y, verbose=0)


def test_input_width_that_does_not_fit_the_network(kit, regression):
    x, y = regression
    model, net = _compiled(kit, n_in=3)
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=r"(?s)\(32, 4\).*input width"):
        model.fit(x, y, verbose=0)
    _unchanged(kit, net, before)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"validation_split": 1.0}, r"validation_split.*\[0, 1\)"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"verbose": 3}, "verbose"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ],
)
def test_bad_fit_arguments(kit, regression, kwargs, pattern):
    model, _ = _compiled(kit)
    with pytest.raises(fitkit.FitkitValueError, match=pattern):
        model.fit(*regression, **{"verbose": 0, **kwargs})


def test_validation_split_with_a_loader_or_dataset(kit, regression):
    model, _ = _compiled(kit)
    x, y = regression
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    with pytest.raises(fitkit.FitkitValueError, match="validation_data"):
        model.fit(batches, validation_split=0.2, verbose=0)


def test_one_shot_generator_for_several_epochs_needs_steps(kit, regression):
    model, _ = _compiled(kit)
    x, y = regression
    with pytest.raises(fitkit.FitkitValueError, match="steps_per_epoch"):
        model.fit(((x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)), epochs=2, verbose=0)


def test_load_weights_missing_file(kit, tmp_path):
    model, _ = _compiled(kit)
    with pytest.raises(fitkit.FitkitValueError, match="No weights file"):
        model.load_weights(kit.weights_path(tmp_path))


def test_load_weights_from_another_architecture(kit, tmp_path):
    path = kit.weights_path(tmp_path)
    fitkit.Model(kit.mlp(4, 1, hidden=8)).save_weights(path)
    model, net = _compiled(kit)
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match="another architecture"):
        model.load_weights(path)
    _unchanged(kit, net, before)


def test_bad_callback_type(kit, regression):
    model, _ = _compiled(kit)
    with pytest.raises(fitkit.FitkitTypeError, match="Callback"):
        model.fit(*regression, callbacks=[lambda logs: None], verbose=0)


def test_errors_subclass_builtins():
    assert issubclass(fitkit.FitkitValueError, ValueError)
    assert issubclass(fitkit.FitkitTypeError, TypeError)
    assert issubclass(fitkit.FitkitValueError, fitkit.FitkitError)


def test_train_on_batch_checks_every_call_without_a_second_forward(kit):
    x, y = make_classes(classes=3)
    model, net = _compiled(kit, n_out=3, loss="cross_entropy")
    model.train_on_batch(x[:32], y[:32])
    bad = y[32:64].copy()
    bad[0] = 7
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=r"label 7.*width 3"):
        model.train_on_batch(x[32:64], bad)
    with pytest.raises(fitkit.FitkitValueError, match="one-hot"):
        model.train_on_batch(x[32:64], np.eye(3, dtype="float32")[y[32:64]])
    _unchanged(kit, net, before)
