"""One worker of a 2-worker MultiWorkerMirroredStrategy run (TF_CONFIG set by the caller), or
with the argument "single" the same training in one process; rank 0 (or the single process)
writes a JSON of weights, history and predictions to the path in FITKIT_TEST_OUT.

"crash" as the argument: worker 1 fails in its second epoch (the run must end non-zero);
"generator" ("single_generator" in one process): the training data is a list of (x, y)
batches (under the strategy, through Dataset.from_generator).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["FITKIT_BACKEND"] = "tensorflow"

import numpy as np

import fitkit

MODE = sys.argv[1] if len(sys.argv) > 1 else "train"
SINGLE, GENERATOR = MODE.startswith("single"), MODE.endswith("generator")
if not SINGLE:  # before TensorFlow runs anything in this process
    context = fitkit.distribute.strategy("multi_worker")
    strategy = context.__enter__()

import keras  # noqa: E402

rng = np.random.default_rng(0)
X = rng.normal(size=(100, 5)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype("int64")

fitkit.set_seed(1)
net = keras.Sequential(
    [keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
)
model = fitkit.Model(net)
model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
if not SINGLE:
    context.__exit__(None, None, None)
# each worker its own seed: the epochs' shuffle is worker 0's on every worker (and its
# initial weights, which MultiWorkerMirroredStrategy broadcasts from worker 0)
fitkit.set_seed(100 + fitkit.distribute.rank())


class Crash(fitkit.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1 and fitkit.distribute.rank() == 1:
            raise SystemExit(3)


data = [(X[i : i + 32], Y[i : i + 32]) for i in range(0, 100, 32)] if GENERATOR else X
history = model.fit(
    data,
    None if GENERATOR else Y,
    batch_size=None if GENERATOR else 32,
    epochs=3,
    shuffle=True,
    verbose=0,
    validation_data=(X[:50], Y[:50]),
    callbacks=[Crash()] if MODE == "crash" else None,
)
out = {
    "weights": [w.tolist() for w in model.get_weights()],
    "history": history.history,
    "predict": model.predict(X, batch_size=32).tolist(),
    "validate": model.validate(X, Y, batch_size=16),
    "rank": fitkit.distribute.rank(),
    "world_size": fitkit.distribute.world_size(),
}
fitkit.distribute.barrier()
if fitkit.distribute.is_main_process():
    with open(os.environ["FITKIT_TEST_OUT"], "w") as f:
        json.dump(out, f)
