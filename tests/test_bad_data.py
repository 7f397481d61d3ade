"""No silent wrong numbers on both backends: bad values, shapes and types; failures mid-run."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import assert_unchanged as _unchanged
from conftest import compiled as _model
from conftest import make_classes, make_regression

import fitkit


# ---------------------------------------------------------------------- non-finite numbers
@pytest.mark.parametrize("where", ["x", "y", "x_tensor", "y_tensor", "frame"])
def test_nan_or_inf_in_memory_is_named_by_row_before_training(kit, where):
    x, y = make_regression(n=64)
    x, y = x.copy(), y.copy()
    if where.startswith("x"):
        x[41, 2] = np.nan
    else:
        y[17, 0] = np.inf
    data_x = kit.tensor(x) if where == "x_tensor" else x
    data_y = kit.tensor(y) if where == "y_tensor" else y
    if where == "frame":
        data_x = pd.DataFrame(x, columns=["a", "b", "c", "d"])
        data_x.loc[5, "c"] = np.nan
    model, net = _model(kit)
    before = kit.weights(net)
    expected = {
        "x": r"x holds nan at row 41",
        "x_tensor": r"x holds nan at row 41",
        "y": r"y holds inf at row 17",
        "y_tensor": r"y holds inf at row 17",
        "frame": r"x\['c'\] holds nan at row 5",
    }[where]
    with pytest.raises(fitkit.FitkitValueError, match=expected):
        model.fit(data_x, data_y, verbose=0)
    _unchanged(kit, net, before)


def test_divergence_stops_at_the_epoch_end_and_keeps_the_history(kit):
    x, y = make_regression(n=64)
    model, _ = _model(kit, lr=1e6)
    with pytest.warns(UserWarning, match=r"fit stopped: the loss became .* at epoch \d"):
        history = model.fit(x, y, epochs=20, verbose=0)
    assert 1 <= len(history) < 20
    assert not np.isfinite(history.history["loss"][-1])
    assert history.stop_reason.startswith("the loss became")
    assert model.predict(x).shape == (64, 1)  # the model stays usable
    model.compile("sgd", "mse", lr=1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no stop, no warning
        history = model.fit(x, y, epochs=4, verbose=0, terminate_on_nan=False)
    assert len(history) == 4


def test_nan_in_streamed_batches_stops_at_a_step_log_point(kit, capsys):
    x, y = make_regression(n=96)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 96, 8)]
    bad = batches[3][1].copy()
    bad[0, 0] = np.nan  # in a target: TensorFlow's relu would turn a NaN input into 0
    batches[3] = (batches[3][0], bad)
    model, _ = _model(kit)
    with pytest.warns(UserWarning, match=r"epoch 1, step 6"):
        history = model.fit(batches, epochs=3, verbose=2, log_step_freq=6)
    assert len(history) == 1 and "epoch 1, step 6" in history.stop_reason


# ---------------------------------------------------------------------- labels
def test_fractional_class_labels_are_refused(kit):
    x, labels = make_classes(n=64, classes=3)
    y = labels.astype("float32")
    y[9] = 1.5
    model, net = _model(kit, n_out=3, loss="cross_entropy")
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=r"whole-number class labels.*1.5"):
        model.fit(x, y, verbose=0)
    _unchanged(kit, net, before)


def test_binary_targets_outside_zero_one_are_refused(kit):
    x, labels = make_classes(n=64, classes=2)
    y = (labels * 2 - 1).astype("float32")[:, None]  # -1 / 1
    model, _net = _model(kit, loss="bce_with_logits")
    with pytest.raises(fitkit.FitkitValueError, match=r"\[0, 1\].*-1.*hinge"):
        model.fit(x, y, verbose=0)
    model.compile("sgd", "hinge")
    model.fit(x, y, verbose=0)  # -1/1 labels are what hinge takes


# ---------------------------------------------------------------------- shapes and types
def test_python_lists_are_arrays_or_batches_and_ragged_lists_are_refused(kit):
    x, y = make_regression(n=32)
    model, _ = _model(kit)
    as_arrays = model.validate(x, y)
    assert model.validate(x.tolist(), y[:, 0].tolist()) == pytest.approx(as_arrays, rel=1e-5)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    assert model.validate(batches) == pytest.approx(as_arrays, rel=1e-5)
    ragged = x.tolist()
    ragged[3] = ragged[3][:2]
    with pytest.raises(fitkit.FitkitValueError, match="ragged"):
        model.fit(ragged, y, verbose=0)


def test_dataframe_columns_convert_one_by_one(kit):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.standard_normal(40),
            "flag": rng.random(40) > 0.5,
            "count": pd.array(rng.integers(0, 5, 40), dtype="Int64"),
            "d": rng.standard_normal(40).astype("float32"),
        }
    )
    y = rng.standard_normal((40, 1)).astype("float32")
    model, _ = _model(kit)
    expected = model.validate(frame.astype("float32").to_numpy(), y)
    assert model.validate(frame, y) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(fitkit.FitkitValueError, match=r"x\['city'\] has dtype (object|str)"):
        model.fit(frame.assign(city="Paris").drop(columns="d"), y, verbose=0)
    missing = frame.copy()
    missing.loc[7, "count"] = pd.NA
    with pytest.raises(fitkit.FitkitValueError, match=r"x\['count'\] has missing values.*row 7"):
        model.fit(missing, y, verbose=0)


def test_int8_category_codes_feed_an_embedding(kit):
    rng = np.random.default_rng(0)
    codes = pd.Series(rng.choice(list("abcdef"), 64)).astype("category").cat.codes
    assert codes.dtype == np.int8
    y = (codes.to_numpy() % 2).astype("int64")
    if kit.name == "torch":
        nn = kit.torch.nn
        net = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 2))
    else:
        keras = kit.keras
        net = keras.Sequential(
            [keras.Input(()), keras.layers.Embedding(6, 4), keras.layers.Dense(2)]
        )
    model = fitkit.Model(net)
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.05)
    history = model.fit(codes, y, epochs=10, verbose=0)
    assert history.history["accuracy"][-1] == 1.0


def test_integer_inputs_train_a_float_network_the_same_on_both_backends(kit):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (64, 4))
    y = x.sum(1, keepdims=True).astype("float32")
    model, _ = _model(kit)
    logs = model.validate(x, y)
    assert logs["loss"] == pytest.approx(model.validate(x.astype("float32"), y)["loss"])
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    fresh, _ = _model(kit)  # batch style: the first call converts, and runs the converted batch
    assert np.isfinite(fresh.train_on_batch(x[:16], y[:16], return_dict=True)["loss"])


def test_an_id_past_the_embedding_says_so(kit):
    ids = np.arange(32).reshape(16, 2) % 12
    if kit.name == "torch":
        nn = kit.torch.nn
        net = nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(6, 1))
    else:
        keras = kit.keras
        net = keras.Sequential(
            [
                keras.Input((2,), dtype="int32"),
                keras.layers.Embedding(10, 3),
                keras.layers.Flatten(),
                keras.layers.Dense(1),
            ]
        )
    # on a GPU the torch case is a kernel assert that ends CUDA: tests/torch/test_cuda.py
    model = fitkit.Model(net, **({"device": "cpu"} if kit.name == "torch" else {}))
    model.compile("sgd", "mse")
    with pytest.raises(fitkit.FitkitValueError, match=r"out of range.*Embedding"):
        model.fit(ids, np.zeros((16, 1), "float32"), verbose=0)


def test_unbatched_data_says_it_has_no_batch_dimension(kit):
    x, y = make_regression(n=16)
    model, _ = _model(kit)
    if kit.name == "torch":
        import torch

        ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y[:, 0]))
        data = torch.utils.data.DataLoader(ds, batch_size=None)
    else:
        data = kit.tf.data.Dataset.from_tensor_slices((x, y[:, 0]))
    with pytest.raises(fitkit.FitkitValueError, match=r"no common batch dimension.*batch_size"):
        model.fit(data, verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match=r"batch dimension.*x\[None\]"):
        model.train_on_batch(x[0], y[0, 0])


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (lambda x, y: (x,), "validation_data is a 1-tuple"),
        (lambda x, y: (x[:0], y[:0]), "validation_data: x is empty"),
        (lambda x, y: (x[:, :3], y), "validation_data: The network failed.*input width"),
    ],
)
def test_validation_data_mistakes_name_validation_data(kit, bad, pattern):
    x, y = make_regression(n=32)
    model, net = _model(kit)
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=pattern):
        model.fit(x, y, validation_data=bad(x, y), verbose=0)
    _unchanged(kit, net, before)


# ---------------------------------------------------------------------- failures mid-run
def test_a_batch_of_another_width_mid_run_names_epoch_step_and_shapes(kit):
    x, y = make_regression(n=64)

    def batches():
        for epoch in range(2):
            for i in range(4):
                xb = x[i * 16 : (i + 1) * 16]
                yield (xb[:, :3] if (epoch, i) == (1, 2) else xb), y[i * 16 : (i + 1) * 16]

    model, _ = _model(kit)
    with pytest.raises(fitkit.FitkitError, match=r"epoch 2, step 3.*\(16, 3\)") as info:
        model.fit(batches(), epochs=2, steps_per_epoch=4, verbose=0)
    assert info.value.__cause__ is not None
    assert len(model.history) == 1  # the finished epoch is kept
    assert np.isfinite(model.validate(x, y)["loss"])  # and the model still works
    with pytest.raises(fitkit.FitkitError, match=r"train_on_batch.*\(8, 3\)"):
        model.train_on_batch(x[:8, :3], y[:8])


def test_a_failing_callback_names_the_epoch_and_keeps_the_history(kit):
    x, y = make_regression(n=32)

    class Breaks(fitkit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("disk full")

    model, _ = _model(kit)
    with pytest.raises(fitkit.FitkitError, match=r"end of epoch 2.*disk full"):
        model.fit(x, y, epochs=4, verbose=0, callbacks=[Breaks()])
    assert len(model.history) == 2


def test_metric_states_follow_a_new_kind_of_target(kit):
    x, labels = make_classes(n=60, classes=3)
    if kit.name == "torch":
        loss = lambda p, y: (p**2).mean()  # noqa: E731  (ignores the target's form)
    else:
        loss = lambda y, p: kit.tf.reduce_mean(p**2)  # noqa: E731
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", loss, metrics=["accuracy"])
    sparse = model.validate(x, labels)
    onehot = model.validate(x, np.eye(3, dtype="float32")[labels])
    assert onehot["accuracy"] == pytest.approx(sparse["accuracy"])
    assert model.validate(x, labels) == pytest.approx(sparse)


# ---------------------------------------------------------------------- found while documenting
def test_class_weight_gives_unnamed_classes_weight_one(kit):
    x, labels = make_classes(n=90, classes=3)
    table = {0: 1.0, 1: 5.0}  # class 2 is not named: it weighs 1, not the last entry's 5
    explicit = np.array([table.get(c, 1.0) for c in labels], "float32")
    model, _ = _model(kit, n_out=3, loss="cross_entropy", lr=1e-12)  # weights stay put
    by_table = model.train_on_batch(x, labels, class_weight=table, return_dict=True)
    assert model.test_on_batch(x, labels, sample_weight=explicit) == pytest.approx(
        by_table["loss"], rel=1e-4
    )
    with pytest.raises(fitkit.FitkitValueError, match="class_weight works with one output"):
        model.fit(x, (labels, labels), class_weight=table, verbose=0)


def test_metrics_dict_with_a_misspelt_output_name_is_named(kit):
    from test_outputs import _two_head_net, _two_targets

    x, labels, value = _two_targets()
    model = fitkit.Model(_two_head_net(kit))
    model.compile(
        "sgd", {"cls": "cross_entropy", "reg": "mse"}, metrics={"cls": ["accuracy"], "rg": ["mae"]}
    )
    with pytest.raises(fitkit.FitkitValueError, match=r"\['rg'\].*\['cls', 'reg'\]"):
        model.fit(x, {"cls": labels, "reg": value}, verbose=0)


def test_a_metric_that_cannot_read_an_output_fails_before_training(kit):
    from test_outputs import _two_head_net, _two_targets

    x, labels, value = _two_targets()
    net = _two_head_net(kit)
    model = fitkit.Model(net)
    model.compile("sgd", {"cls": "cross_entropy", "reg": "mse"}, metrics=["mae"])
    before = kit.weights(net)
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"metric 'cls_mae' of output 'cls'.*"
        r"shape.*fit its predictions",
    ):
        model.fit(x, {"cls": labels, "reg": value}, verbose=0)
    _unchanged(kit, net, before)


def test_a_metric_that_raises_on_the_first_batch_is_named_with_its_own_error(kit):
    """Not reported as a shape mismatch: the failing metric is named, its error chained."""

    def lookup(a, b):
        raise KeyError("the label table is not loaded")

    x, y = make_classes(n=32, d=4)
    net = kit.mlp(4, 3)
    model = fitkit.Model(net)
    model.compile("sgd", "cross_entropy", metrics={"acc": "accuracy", "lookup": lookup})
    before = kit.weights(net)
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"^The metric 'lookup' failed on a first "
        r"batch .*KeyError: .*label table is not "
        r"loaded.*Fix the metric",
    ) as info:
        model.fit(x, y, verbose=0)
    assert isinstance(info.value.__cause__, KeyError)
    assert "'acc'" not in str(info.value) and "fit its predictions" not in str(info.value)
    _unchanged(kit, net, before)


def test_scalar_loss_with_sample_weights_is_the_same_clear_error_on_both_backends(kit):
    x, y = make_regression(n=32)
    if kit.name == "torch":
        loss = lambda p, t: ((p - t) ** 2).mean()  # noqa: E731
    else:
        loss = lambda t, p: kit.tf.reduce_mean((t - p) ** 2)  # noqa: E731
    net = kit.mlp(4, 1)
    model = fitkit.Model(net)
    model.compile("sgd", loss)
    with pytest.raises(fitkit.FitkitValueError, match="one loss value per sample") as info:
        model.fit(x, y, sample_weight=np.ones(32), verbose=0)
    assert "StagingError" not in str(info.value)


def test_named_metric_functions_may_return_per_sample_values(kit):
    x, y = make_regression(n=32)
    if kit.name == "torch":
        fn = lambda p, t: (p - t).abs()[:, 0]  # noqa: E731
    else:
        fn = lambda t, p: kit.tf.abs(t - p)[:, 0]  # noqa: E731
    model, _ = _model(kit, metrics={"abs_err": fn})
    logs = model.validate(x, y, batch_size=32)
    assert logs["abs_err"] == pytest.approx(float(np.abs(model.predict(x) - y).mean()), rel=1e-5)


def test_memmap_arrays_train_like_the_same_arrays_in_memory(kit, tmp_path):
    x, y = make_regression(n=200)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    runs = []
    for data in (x, mapped):  # shuffled: the map's rows are read batch by batch
        fitkit.set_seed(2)
        model, net = _model(kit)
        assert model.validate(data, y) == pytest.approx(model.validate(x, y))
        model.fit(data, y, batch_size=16, epochs=2, verbose=0)
        runs.append((model.validate(x, y), kit.weights(net)))
    for a, b in zip(runs[0][1], runs[1][1], strict=True):  # rows sorted within a batch: same sums
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_map_reader_reads_scattered_rows_from_the_file(tmp_path):
    from fitkit.mapped import MapReader

    x = np.arange(600, dtype="float32").reshape(100, 6)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    reader = MapReader()
    index = np.array([0, 1, 2, 7, 50, 51, 99])
    np.testing.assert_array_equal(reader.rows(mapped, 0, 0, index), x[index])
    np.testing.assert_array_equal(reader.rows(mapped, 10, 20), x[10:20])
    reader.close()


def test_softmax_outputs_given_a_logits_loss_are_warned_about(kit):
    x, labels = make_classes(n=64, d=4)
    model = fitkit.Model(kit.mlp(4, 3, out_activation="softmax"))
    model.compile("sgd", "cross_entropy")
    with pytest.warns(UserWarning, match="look like softmax probabilities"):
        model.fit(x, labels, epochs=1, verbose=0)
    plain = fitkit.Model(kit.mlp(4, 3))  # logits: no warning
    plain.compile("sgd", "cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        plain.fit(x, labels, epochs=1, verbose=0)
