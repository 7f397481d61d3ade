"""Train the same small net on one device and under a strategy on 2 logical CPUs (same
global batch); print a JSON {case: {"replicas", "single", "distributed"}} of weights, history,
predictions and a validate of both.

Run in a fresh process: logical devices are configured before TensorFlow initialises.
Arguments: the strategy's name (mirrored, central_storage), then cases: arrays (100 rows in
batches of 32, shuffle off), odd (batches of 33: a last batch of 1 row, one replica empty),
dataset (tf.data), generator (a one-shot generator, then a list of batches), shuffle,
accumulate (gradient accumulation), clip, r2, multi (two outputs), batch (batch-style calls),
checkpoint (save, train, load, train), custom (a class-style train_step).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["FITKIT_BACKEND"] = "tensorflow"

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import fitkit  # noqa: E402

STRATEGY = sys.argv[1]
CASE = ""
rng = np.random.default_rng(0)
X = rng.normal(size=(100, 5)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype("int64")
R = (X @ rng.normal(size=(5, 2))).astype("float32")


class Custom(fitkit.Model):
    """A class-style train_step: its loss is scaled by the replica's share of the rows."""

    def train_step(self, batch):
        from fitkit.tf.distribute import replica_share

        x, y, _ = self.unpack_batch(batch)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x, y, self.net(x, training=True))
            scaled = loss * replica_share(x)
        variables = self.net.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return {"loss": loss}


def build():
    fitkit.set_seed(1)
    if CASE == "multi":
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        net = keras.Model(
            inputs,
            {
                "cls": keras.layers.Dense(2, name="cls")(hidden),
                "reg": keras.layers.Dense(2, name="reg")(hidden),
            },
        )
    else:
        net = keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(2, kernel_regularizer="l2"),
            ]
        )
    model = (Custom if CASE == "custom" else fitkit.Model)(net)
    kwargs = {}
    if CASE == "accumulate":
        kwargs["gradient_accumulation_steps"] = 3  # 4 steps: a full window, a partial one
    if CASE == "clip":
        kwargs["global_clipnorm"] = 0.05
    if CASE == "r2":
        model.compile("adam", "mse", metrics=["mae", "r2"], lr=0.01, **kwargs)
    elif CASE == "multi":
        model.compile(
            "adam",
            {"cls": "cross_entropy", "reg": "mse"},
            loss_weights={"cls": 1.0, "reg": 0.5},
            metrics={"cls": ["accuracy"], "reg": ["mae"]},
            lr=0.01,
        )
    else:
        model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01, **kwargs)
    return model


def batches(y):
    for i in range(0, 100, 32):
        yield X[i : i + 32], y[i : i + 32]


def train(model):
    y = {"cls": Y, "reg": R} if CASE == "multi" else R if CASE == "r2" else Y
    if CASE == "dataset":
        data = tf.data.Dataset.from_tensor_slices((X, y)).batch(32)
        hist = model.fit(data, epochs=3, verbose=0, validation_data=data)
    elif CASE == "generator":
        hist = model.fit(batches(y), epochs=1, steps_per_epoch=4, verbose=0)
        hist = model.fit(list(batches(y)), epochs=2, verbose=0)
    elif CASE == "batch":
        logs = [
            model.train_on_batch(X[i : i + 25], y[i : i + 25], return_dict=True)
            for i in range(0, 100, 25)
        ]
        logs.append(model.test_on_batch(X[:7], y[:7], return_dict=True))
        return {
            "weights": [w.tolist() for w in model.get_weights()],
            "history": {"logs": [v for d in logs for v in d.values()]},
            "predict": model.predict_on_batch(X[:9]).tolist(),
            "validate": model.validate(X, y, batch_size=16),
        }
    elif CASE == "checkpoint":
        model.fit(X, y, batch_size=32, epochs=1, verbose=0)
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fitkit_ckpt_{os.getpid()}")
        model.save_checkpoint(path)
        model.fit(X, y, batch_size=32, epochs=1, verbose=0)  # changes everything
        model.load_checkpoint(path)
        hist = model.fit(X, y, batch_size=32, epochs=2, verbose=0)
    elif CASE == "odd":
        hist = model.fit(
            X,
            y,
            batch_size=33,
            epochs=3,
            shuffle=False,
            verbose=0,
            validation_data=(X[:67], y[:67]),
        )
        return {
            "weights": [w.tolist() for w in model.get_weights()],
            "history": hist.history,
            "predict": model.predict(X, batch_size=33).tolist(),
            "validate": model.validate(X, y, batch_size=33),
        }
    else:
        hist = model.fit(
            X,
            y,
            batch_size=32,
            epochs=3,
            shuffle=CASE == "shuffle",
            verbose=0,
            validation_data=(
                X[:50],
                y[:50] if CASE != "multi" else {k: v[:50] for k, v in y.items()},
            ),
        )
    predictions = model.predict(X, batch_size=32)
    if isinstance(predictions, dict):
        predictions = np.concatenate([predictions[k] for k in sorted(predictions)], 1)
    return {
        "weights": [w.tolist() for w in model.get_weights()],
        "history": hist.history,
        "predict": predictions.tolist(),
        "validate": model.validate(X, y, batch_size=16),
    }


results = {}
for CASE in sys.argv[2:]:
    single = train(build())
    with fitkit.distribute.strategy(STRATEGY) as s:
        model = build()
        replicas = s.replicas
        if CASE == "shuffle":  # fit inside the block too (first-batch checks in its scope)
            distributed = train(model)
    if CASE != "shuffle":
        distributed = train(model)
    results[CASE] = {"replicas": replicas, "single": single, "distributed": distributed}
print(json.dumps(results))
