"""A training run with BackupAndRestore that sends itself SIGTERM at a chosen step (as a
scheduler would), for tests/test_signals.py.

usage: train_sigterm.py BACKEND BACKUP_DIR OUT.npz [--at EPOCH STEP] [--twice] [--save-freq N]
       [--stall-in-validation]
--at: SIGTERM from a callback after train step STEP (1-based) of EPOCH (0-based); --twice: two
SIGTERMs there; --stall-in-validation: the SIGTERM comes at the first validation step instead,
which then takes its time. on_train_end writes OUT.npz + ".ended"; the final weights and
history go to OUT.npz. In-memory arrays, shuffled, and dropout: RNGs the resume must restore.
"""

import argparse
import json
import os
import signal
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
parser = argparse.ArgumentParser()
parser.add_argument("backend")
parser.add_argument("backup_dir")
parser.add_argument("out")
parser.add_argument("--at", type=int, nargs=2, default=None)
parser.add_argument("--twice", action="store_true")
parser.add_argument("--save-freq", default="epoch")
parser.add_argument("--stall-in-validation", action="store_true")
args = parser.parse_args()
os.environ["FITKIT_BACKEND"] = args.backend

import numpy as np  # noqa: E402

import fitkit  # noqa: E402

fitkit.set_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(160, 6)).astype("float32")
y = (x[:, :3].sum(1) > 0).astype("int64")

if args.backend == "torch":
    import torch

    net = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2)
    )
else:
    import keras

    net = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2),
        ]
    )


class Term(fitkit.callbacks.Callback):
    """SIGTERM to this process at (epoch, step); records that on_train_end ran."""

    def on_train_batch_end(self, batch, logs=None):
        if (
            args.at
            and not args.stall_in_validation
            and (self.model.runtime.fit.epoch, batch + 1) == tuple(args.at)
        ):
            os.kill(os.getpid(), signal.SIGTERM)
            if args.twice:
                os.kill(os.getpid(), signal.SIGTERM)

    def on_test_batch_end(self, batch, logs=None):
        if args.stall_in_validation and self.model.runtime.fit.epoch == args.at[0]:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(120)  # a validation step that takes long: the timeout must end it

    def on_train_end(self, logs=None):
        with open(args.out + ".ended", "w") as file:
            file.write(str(self.model.history.stop_reason))


save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)
model = fitkit.Model(net)
model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
history = model.fit(
    x,
    y,
    batch_size=16,
    epochs=3,
    validation_data=(x[:32], y[:32]),
    verbose=0,
    callbacks=[
        Term(),
        fitkit.callbacks.EarlyStopping("val_loss", patience=10),
        fitkit.callbacks.BackupAndRestore(args.backup_dir, save_freq=save_freq),
    ],
)
np.savez(
    args.out,
    *model.get_weights(),
    history=np.frombuffer(json.dumps(history.history).encode(), dtype=np.uint8),
)
