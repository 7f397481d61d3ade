"""A small data-parallel fit (DDP under torchrun, MultiWorkerMirrored under TF_CONFIG) where
one rank hangs or dies at a chosen step, for tests/test_launch_faults.py.

usage (under `fitkit launch -n 2`): hang_rank.py PID_DIR (hang|die) RANK STEP
Each rank writes PID_DIR/rank<r>.pid as training begins; rank RANK then, before train step
STEP (1-based) of the first epoch, sleeps for good ("hang") or exits with code 3 ("die"),
leaving the time it died in PID_DIR/died.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pid_dir, mode, bad_rank, bad_step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

import numpy as np  # noqa: E402

import fitkit  # noqa: E402

context = fitkit.distribute.strategy("auto")  # before TensorFlow runs anything
context.__enter__()
rank = fitkit.distribute.rank()
fitkit.set_seed(0)
x = np.random.default_rng(0).normal(size=(80, 4)).astype("float32")
y = (x.sum(1) > 0).astype("int64")
if fitkit.backend() == "torch":
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
else:
    import keras

    net = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
model = fitkit.Model(net)
model.compile("sgd", "cross_entropy", lr=0.1)


class Fault(fitkit.callbacks.Callback):
    def on_train_begin(self, logs=None):
        with open(os.path.join(pid_dir, f"rank{rank}.pid"), "w") as file:
            file.write(str(os.getpid()))

    def on_train_batch_begin(self, batch, logs=None):
        if rank == bad_rank and self.model.runtime.fit.epoch == 0 and batch + 1 == bad_step:
            print(f"rank {rank} {mode}s before step {bad_step}", file=sys.stderr, flush=True)
            if mode == "die":
                with open(os.path.join(pid_dir, "died"), "w") as file:
                    file.write(repr(time.time()))
                os._exit(3)
            while True:
                time.sleep(3600)


model.fit(x, y, batch_size=8, epochs=1000, verbose=0, callbacks=[Fault()])
context.__exit__(None, None, None)
