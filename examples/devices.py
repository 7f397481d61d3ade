"""Devices and several devices: fitkit.devices settings, then training under a strategy.

What it shows, in the order a script must do it (docs/devices.md):

1. the settings first, before the framework initialises its devices:
   - `fitkit.devices.memory_growth(True)`: TensorFlow takes GPU memory as needed instead of
     nearly all of it; torch turns on its allocator's expandable segments. Without a GPU it
     changes nothing and returns False (printed as it is). TensorFlow ignores it on a GPU
     split into logical GPUs (each takes its memory_limit), so there it is left out;
   - on TensorFlow, `fitkit.devices.virtual_devices(2)`: the CPU (or GPU 0) split into two
     logical devices, so that a MirroredStrategy has two replicas even on a laptop;
2. `fitkit.distribute.strategy(...)`, entered before anything initialises the framework:
   - torch: "ddp" (DistributedDataParallel, gloo on the CPU) when started by `fitkit launch`,
     which starts one process per rank; "none" (one process) when run directly;
   - TensorFlow: "mirrored" over the two logical devices (one process); "multi_worker"
     (MultiWorkerMirroredStrategy, one process per worker) under `fitkit launch --backend tf`;
3. `fitkit.devices.list_devices()`: what the framework now sees;
4. the net built, compiled and fit inside the strategy. `batch_size` is the global batch,
   split over the replicas, so 2 replicas give the numbers of one process (up to float
   rounding). Every process trains on its share of each batch and says which rank it is;
   only the main process (rank 0) prints the devices, the epochs, the final loss and the
   RESULT line, and saves the PNG.

Run:  python examples/devices.py                                (torch, one process: "none")
      python -m fitkit.cli launch -n 2 examples/devices.py      (torch DDP, 2 processes;
                                                                 `fitkit launch` if installed)
      FITKIT_BACKEND=tensorflow python examples/devices.py      (TF, 2 logical CPUs: "mirrored")
      python -m fitkit.cli launch -n 2 --backend tf examples/devices.py   (TF "multi_worker")
      python examples/devices.py --quick --out /tmp             (small and fast, for the tests)
"""

import argparse
import os
import pathlib

import numpy as np

import fitkit


def settings(backend, launched, say=print):
    """The device settings: first, before anything creates a tensor or a network."""
    split = backend == "tensorflow" and not launched  # 2 logical devices for "mirrored"
    gpus = [d for d in fitkit.devices.list_devices(initialize=False) if d["type"] == "GPU"]
    if split and gpus:
        # TensorFlow drops memory growth on a GPU split into logical GPUs: each logical GPU
        # takes its memory_limit instead. So it is not asked for here.
        say("memory_growth: not used (GPU 0 is split into logical GPUs of a fixed size)")
    else:
        grew = fitkit.devices.memory_growth(True)
        say(
            f"memory_growth(True) -> {grew}: "
            + ("a GPU takes memory as it needs it" if grew else "no GPU here, nothing changed")
        )
    if split:
        # GPU 0 split in two needs a size per logical GPU; the CPU split takes none.
        fitkit.devices.virtual_devices(2, memory_limit=1024 if gpus else None)
        say(
            "virtual_devices(2): " + ("GPU 0" if gpus else "the CPU") + " split into 2 "
            "logical devices"
        )


def make_data(n, seed=0):
    """A small regression: y = sin(x0) + x1 * x2 + noise, 6 features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype("float32")
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.standard_normal(n)
    return x, y.astype("float32")[:, None]


def make_net(backend):
    if backend == "torch":
        import torch.nn as nn

        return nn.Sequential(
            nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
        )
    import keras

    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNG (default: here)")
    args = parser.parse_args()

    backend = fitkit.backend()
    launched = fitkit.distribute.environment_name()  # set by fitkit launch, else ""
    main = fitkit.distribute.is_main_process()  # rank 0 (or the only process)
    say = print if main else (lambda *args: None)  # what only the main process prints
    settings(backend, launched, say)  # 1. settings first

    # 2. the strategy: "ddp" (torch) / "multi_worker" (TF) under fitkit launch, else
    # "mirrored" on TF (the 2 logical devices) and "none" on torch. It comes before anything
    # that initialises the framework (listing TF's logical devices does), as multi_worker needs.
    name = launched or ("mirrored" if backend == "tensorflow" else "none")
    fitkit.set_seed(0)
    n, epochs = (2048, 3) if args.quick else (16384, 15)
    x, y = make_data(n)
    with fitkit.distribute.strategy(name) as strategy:
        say("\ndevices:")  # 3. what the framework sees now
        for d in fitkit.devices.list_devices():
            say(
                f"  {d['name']:30s} {d['type']:4s} {d['kind']:9s} memory_mb={d['memory_mb']} "
                f"{d['description']}"
            )
        say("a new fitkit.Model trains on", fitkit.devices.device())
        rank, world = fitkit.distribute.rank(), fitkit.distribute.world_size()
        print(
            f"strategy {strategy.name!r}: process rank {rank} of world size {world}, "
            f"{strategy.replicas} replica(s) in sync, pid {os.getpid()}"
        )  # every process

        model = fitkit.Model(make_net(backend))  # 4. build, compile and fit inside
        model.compile("adam", "mse", metrics=["mae"], lr=3e-3)
        history = model.fit(
            x, y, batch_size=128, epochs=epochs, validation_split=0.2, verbose=2
        )  # 128 rows per step over all replicas
        final = history.history["loss"][-1], history.history["val_loss"][-1]

    if main:  # the main process only
        import matplotlib

        matplotlib.use("Agg")  # write PNGs; no window, no display needed
        print(f"final loss {final[0]:.4f}, val_loss {final[1]:.4f} (rank {rank} of {world})")
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        curves = out / "devices_history.png"
        history.plot().savefig(curves)
        print(f"saved {curves}")
        print(
            f"RESULT replicas={strategy.replicas} world_size={world} "
            f"final_loss={final[0]:.4f} val_loss={final[1]:.4f}"
        )
