"""TensorFlow steps across shapes, dtypes and structures; Keras parity for weighted multi-output."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import fitkit


def _text_net():
    return keras.Sequential(
        [
            keras.layers.Embedding(50, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )


def _sequences(n=160, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, 50, rng.integers(4, 24)) for _ in range(n)]
    labels = np.array([int((s > 25).mean() > 0.5) for s in seqs])
    return seqs, labels


def test_padded_batches_of_every_length_train_with_few_traces(tf_kit):
    seqs, labels = _sequences()
    ds = tf.data.Dataset.from_generator(
        lambda: zip(seqs, labels, strict=True),
        output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int64)),
    ).padded_batch(16)
    assert len({int(x.shape[1]) for x, _ in ds}) >= 3  # the lengths really differ
    model = fitkit.Model(_text_net())
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-2)
    history = model.fit(ds, epochs=4, verbose=0, validation_data=ds)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.runtime.function("train").tracing_count() <= 2  # the first length, then relaxed
    assert model.runtime.function("test").tracing_count() <= 2


def test_new_sequence_length_label_dtype_and_input_structure_between_calls(tf_kit):
    rng = np.random.default_rng(0)
    model = fitkit.Model(_text_net())
    model.compile("adam", "cross_entropy", lr=1e-2)
    for length, dtype in ((10, "int64"), (15, "int64"), (15, "int32"), (7, "int32")):
        x = rng.integers(1, 50, (64, length))
        y = (x.mean(1) > 25).astype(dtype)
        model.fit(x, y, epochs=1, verbose=0)
        model.train_on_batch(x[:8], y[:8])
        assert model.predict(x).shape == (64, 2)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    two = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    model = fitkit.Model(two)
    model.compile("sgd", "mse")
    xa, xb = rng.standard_normal((32, 3)), rng.standard_normal((32, 2))
    y = rng.standard_normal((32, 1)).astype("float32")
    as_list = model.validate([xa, xb], y)
    assert model.validate((xa, xb), y) == pytest.approx(as_list)
    model.fit([xa, xb], y, epochs=1, verbose=0)
    model.fit((xa, xb), y, epochs=1, verbose=0)


def test_a_shape_the_network_cannot_take_is_a_fitkit_error_not_a_tensor_dump(tf_kit):
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model = fitkit.Model(net)
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    good = [(rng.standard_normal((8, 4)).astype("float32"), np.zeros((8, 1), "float32"))] * 3
    bad = good + [(rng.standard_normal((8, 5)).astype("float32"), np.zeros((8, 1), "float32"))]
    with pytest.raises(fitkit.FitkitError, match=r"epoch 1, step 4.*\(8, 5\)") as info:
        model.fit(bad, epochs=1, verbose=0)
    assert "tf.Tensor(" not in str(info.value)
    assert model.validate(good)["loss"] >= 0  # still usable


def test_run_eagerly_runs_python_steps(tf_kit):
    seen = []

    class Spy(fitkit.Model):
        def train_step(self, batch):
            seen.append(tf.executing_eagerly())
            return super().train_step(batch)

    x = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    y = x.sum(1, keepdims=True)
    for eager in (True, False):
        seen.clear()
        model = Spy(tf_kit.mlp(4, 1))
        model.compile("sgd", "mse", run_eagerly=eager)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert seen and all(s == eager for s in seen)
        # eager: every step runs the Python body; compiled: only tracing does
        assert len(seen) == 8 if eager else len(seen) <= 2


def test_weighted_multi_output_fit_and_evaluate_equal_keras(tf_kit):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 4)).astype("float32")
    labels = rng.integers(0, 3, 96)
    value = (x.sum(1, keepdims=True) * 0.3).astype("float32")
    w = rng.uniform(0.2, 3.0, 96).astype("float32")

    def build():
        inp = keras.Input((4,))
        h = keras.layers.Dense(8, activation="relu")(inp)
        return keras.Model(
            inp,
            {
                "cls": keras.layers.Dense(3, name="cls")(h),
                "reg": keras.layers.Dense(1, name="reg")(h),
            },
        )

    fitkit.set_seed(2)
    ours, theirs = build(), build()
    theirs.set_weights(ours.get_weights())
    targets = {"cls": labels, "reg": value}
    model = fitkit.Model(ours)
    model.compile(
        keras.optimizers.SGD(0.1),
        {"cls": "cross_entropy", "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.5},
        weighted_metrics={"reg": ["mae"]},
    )
    history = model.fit(
        x, targets, sample_weight=w, batch_size=32, epochs=3, shuffle=False, verbose=0
    )
    theirs.compile(
        keras.optimizers.SGD(0.1),
        loss={
            "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "reg": keras.losses.MeanSquaredError(),
        },
        loss_weights={"cls": 1.0, "reg": 0.5},
        weighted_metrics={"reg": [keras.metrics.MeanAbsoluteError(name="mae")]},
    )
    keras_history = theirs.fit(
        x, targets, sample_weight=w, batch_size=32, epochs=3, shuffle=False, verbose=0
    )
    for p, q in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, atol=1e-5, rtol=0)
    for key in ("loss", "cls_loss", "reg_loss", "reg_mae"):
        np.testing.assert_allclose(history.history[key], keras_history.history[key], rtol=1e-5)
    ours_eval = model.validate(x, targets, sample_weight=w)
    keras_eval = theirs.evaluate(x, targets, sample_weight=w, verbose=0, return_dict=True)
    for key in ("loss", "cls_loss", "reg_loss", "reg_mae"):
        assert ours_eval[key] == pytest.approx(keras_eval[key], rel=1e-5)


@pytest.mark.parametrize("known_length", [True, False])
def test_tf_data_runs_several_steps_per_call_with_identical_results(tf_kit, known_length):
    """Every steps-per-call value gives the same weights and logs, whether the dataset
    knows its length or not (a partial last chunk and a partial last batch included)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 4)).astype("float32")  # 100 = 7 batches of 16, the last of 4
    y = x.sum(1, keepdims=True).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    if not known_length:
        ds = ds.filter(lambda a, b: True)  # cardinality becomes unknown
    results = []
    for group in (1, 3, 32):
        fitkit.set_seed(4)
        net = tf_kit.mlp(4, 1)
        model = fitkit.Model(net)
        model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"], steps_per_execution=group)
        history = model.fit(ds, epochs=2, verbose=0, validation_data=ds)
        results.append((history.df.to_numpy(), tf_kit.weights(net)))
        if group == 3:
            assert model.runtime.function("train").tracing_count() <= 2  # first batch + iterator
    for table, weights in results[1:]:
        np.testing.assert_allclose(table, results[0][0], rtol=1e-6)
        for a, b in zip(weights, results[0][1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_tf_data_with_steps_per_epoch_runs_chunks_up_to_the_limit(tf_kit):
    x = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(8)  # 8 batches
    model = fitkit.Model(tf_kit.mlp(4, 1))
    model.compile("sgd", "mse", steps_per_execution=3)
    seen = []

    class Steps(fitkit.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    with pytest.warns(UserWarning, match="pass ended after 3 of steps_per_epoch=5"):
        history = model.fit(ds, epochs=3, steps_per_epoch=5, verbose=0, callbacks=[Steps()])
    assert len(history) == 3
    # epoch 1: the peeked first batch alone, then chunks of 3 and 1; epoch 2 goes on through
    # the same pass, whose last 3 batches are one chunk (as Keras, the epoch ends with the
    # pass); epoch 3 (a new pass): chunks of 3 and 2. Hooks see each chunk's last step.
    assert seen == [0, 3, 4, 2, 2, 4]


@pytest.mark.parametrize("known_length", [True, False])
def test_predict_on_tf_data_runs_chunks_and_equals_keras(tf_kit, known_length):
    x = np.random.default_rng(0).standard_normal((33 * 16, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)
    if not known_length:  # 1 + 32 batches: the last chunk finds the data already ended
        ds = ds.filter(lambda a: True)
    net = tf_kit.mlp(4, 2)
    model = fitkit.Model(net)
    out = model.predict(ds)
    np.testing.assert_allclose(out, net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert model.runtime.function("predict").tracing_count() <= 2  # the first batch + the iterator


def test_a_native_keras_loss_error_leads_with_its_cause(tf_kit):
    import keras

    x, y = np.random.randn(64, 4).astype("float32"), np.random.randint(0, 3, (64,))
    model = fitkit.Model(tf_kit.mlp(4, 3))
    model.compile("adam", keras.losses.CategoricalCrossentropy())  # wants one-hot targets
    with pytest.raises(fitkit.StepFailedError) as info:
        model.fit(x, y, epochs=1, verbose=0)
    message = str(info.value)
    assert "File " not in message
    # fitkit's own step is traced without AutoGraph (as Keras's is): the loss's own error
    # is the message, right after the step and the shapes
    assert "(32,)]: ValueError: Arguments `target` and `output` must have the same rank" in message

    class Overridden(fitkit.Model):  # a user's step is traced with AutoGraph, as before
        def train_step(self, batch):
            x_b, y_b = batch
            loss = keras.losses.CategoricalCrossentropy()(y_b, self(x_b))
            return {"loss": loss}

    model = Overridden(tf_kit.mlp(4, 3))
    model.compile("adam", "mse")
    with pytest.raises(fitkit.StepFailedError) as info:
        model.fit(x, y, epochs=1, verbose=0)
    message = str(info.value)
    assert "must have the same rank" in message and "File " not in message
    assert message.index("same rank") < message.index("raised in the traced step")
