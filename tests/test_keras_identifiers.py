"""Keras identifiers in compile: class names and serialized dicts, on TensorFlow as Keras takes
them, on torch as their portable twins (a setting with no twin is refused)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_classes

import fitkit


def _serialized():
    import keras

    return (
        keras.optimizers.serialize(keras.optimizers.Adam(0.01, beta_1=0.8)),
        keras.losses.serialize(keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        [
            keras.metrics.serialize(keras.metrics.SparseCategoricalAccuracy()),
            keras.metrics.serialize(keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")),
        ],
    )


def test_serialized_dicts_train_to_keras_numbers_on_tensorflow(tf_kit):
    import keras

    x, y = make_classes(n=128, d=4)
    optimizer, loss, metrics = _serialized()
    theirs = tf_kit.mlp(4, 3)
    ours = tf_kit.mlp(4, 3)
    ours.set_weights(theirs.get_weights())
    # Keras's compile takes the optimizer's dict itself; losses and metrics it deserializes
    theirs.compile(
        optimizer,
        keras.losses.deserialize(loss),
        metrics=[keras.metrics.deserialize(m) for m in metrics],
    )
    expected = theirs.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    model = fitkit.Model(ours)
    model.compile(optimizer, loss, metrics=metrics)
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.beta_1 == 0.8
    for key in ("loss", "sparse_categorical_accuracy", "top2"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def group_lr(model):
    return model.optimizer.param_groups[0]["lr"]


def test_serialized_dicts_mean_their_portable_twins_on_torch(torch_kit):
    x, y = make_classes(n=128, d=4)
    fitkit.set_seed(0)
    by_keras = fitkit.Model(torch_kit.mlp(4, 3))
    by_keras.compile(*_serialized()[:2], metrics=_serialized()[2])
    fitkit.set_seed(0)
    by_name = fitkit.Model(torch_kit.mlp(4, 3))
    adam = torch_kit.torch.optim.Adam(
        by_name.net.parameters(), lr=group_lr(by_keras), betas=(0.8, 0.999), eps=1e-7
    )
    by_name.compile(
        adam,
        "cross_entropy",
        metrics=["sparse_categorical_accuracy", fitkit.metrics.TopKAccuracy(k=2, name="top2")],
    )
    group = by_keras.optimizer.param_groups[0]
    assert type(by_keras.optimizer).__name__ == "Adam"
    # Keras's dict holds every setting (clipnorm None, use_ema False...): the defaults pass
    assert (group["lr"], *group["betas"], group["eps"]) == pytest.approx((0.01, 0.8, 0.999, 1e-7))
    a = by_keras.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    b = by_name.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    assert list(a) == list(b) and "top2" in a
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6)


def test_keras_class_names_as_strings_work_on_both_backends(kit):
    x, y = make_classes(n=64, d=4)
    model = fitkit.Model(kit.mlp(4, 3, out_activation="softmax"))
    model.compile("Adam", "SparseCategoricalCrossentropy", metrics=["SparseCategoricalAccuracy"])
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert "sparse_categorical_accuracy" in logs


def test_per_output_dicts_are_not_taken_for_serialized_ones(kit):
    x, y = make_classes(n=64, d=4)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile(
        "sgd",
        {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}},
        metrics={"acc": "accuracy"},
    )
    assert "acc" in model.fit(x, y, epochs=1, verbose=0).history


@pytest.mark.parametrize(
    "optimizer, named",
    [
        ({"class_name": "Adam", "config": {"clipnorm": 1.0}}, "clipnorm"),
        ({"class_name": "SGD", "config": {"weight_decay": 0.1}}, "weight_decay"),
        ({"class_name": "Lion", "config": {}}, "Lion"),
    ],
)
def test_torch_refuses_a_keras_optimizer_setting_it_has_no_twin_for(torch_kit, optimizer, named):
    model = fitkit.Model(torch_kit.mlp(4, 3))
    with pytest.raises(fitkit.FitkitValueError, match=named):
        model.compile(optimizer, "cross_entropy")


def test_torch_refuses_categorical_crossentropy_on_logits(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 3))
    with pytest.raises(fitkit.FitkitValueError, match="from_logits"):
        model.compile(
            "adam", {"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}
        )
