"""Keras's everyday arguments on both backends: validation_freq/steps, return_dict, verbose."""

from __future__ import annotations

import math

import pytest

import fitkit


def test_validation_freq_validates_every_n_epochs_or_listed_epochs(kit, regression):
    x, y = regression
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    every_two = model.fit(x, y, epochs=4, verbose=0, validation_data=(x, y), validation_freq=2)
    assert [math.isnan(v) for v in every_two.history["val_loss"]] == [True, False, True, False]
    listed = model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), validation_freq=[1, 3])
    assert [math.isnan(v) for v in listed.history["val_loss"]] == [False, True, False]
    with pytest.raises(fitkit.FitkitValueError, match="validation_freq"):
        model.fit(x, y, validation_data=(x, y), validation_freq=0, verbose=0)


def test_validation_steps_limits_the_validation_pass(kit, regression):
    x, y = regression
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    history = model.fit(
        x[:8], y[:8], epochs=1, batch_size=32, verbose=0, validation_data=(x, y), validation_steps=2
    )
    expected = model.validate(x[:64], y[:64], batch_size=32)
    assert history.history["val_loss"][0] == pytest.approx(expected["loss"], rel=1e-6)
    assert model.validate(x, y, steps=2, batch_size=32) == pytest.approx(expected)


def test_return_dict_false_lists_values_in_metrics_names_order(kit, classes):
    x, y = classes
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy", metrics=["accuracy"])
    logs = model.validate(x, y)
    assert model.metrics_names == ["loss", "accuracy"]
    assert model.evaluate(x, y, return_dict=False) == pytest.approx(
        [logs["loss"], logs["accuracy"]]
    )


def test_verbose_validate_and_predict_print_one_line(kit, regression, capsys):
    x, y = regression
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    model.validate(x, y)
    model.predict(x)
    assert capsys.readouterr().out == ""
    model.validate(x, y, verbose=1)
    model.predict(x, verbose=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("validate - loss: ")
    assert out[1].startswith(f"predict - {len(x)} samples in ")
    with pytest.raises(fitkit.FitkitValueError, match="verbose"):
        model.predict(x, verbose=5)
