"""Several inputs and several outputs: a table with a categorical column, two prediction heads.

The data is a generated customer table (a pandas DataFrame): five numeric columns and a
categorical `region` column with 12 values. From each row the network predicts two things:

- `segment`: the customer's segment, one of 3 classes (logits; cross-entropy, accuracy);
- `spend`: next year's spend, a number (mse, with mae as a metric).

The network takes two inputs, as tabular models usually do: the numeric columns (scaled), and
the region's integer code through an embedding (8 numbers per region, learnt). A shared body
feeds two heads, and the network returns a dict `{"segment": ..., "spend": ...}`. compile
takes the losses, loss weights and metrics as dicts by output name (docs/usage.md, "Network
outputs"); the logs hold the weighted total `loss`, each output's `segment_loss` /
`spend_loss`, and `segment_accuracy` / `spend_mae`, each with its `val_` twin.

The same model is built natively on each backend (a torch nn.Module whose forward takes the
inputs by name, a Keras functional model with named inputs); everything from compile on is
the same code.

Run:  python examples/multi_io.py                         (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/multi_io.py
      python examples/multi_io.py --quick --out /tmp      (small and fast, for the tests)
"""

import argparse
import pathlib

import numpy as np
import pandas as pd

import fitkit

NUMERIC = ["age", "income", "visits", "tenure", "discount"]
REGIONS = 12
SEGMENTS = ["budget", "regular", "premium"]


def make_table(n, seed=0):
    """A customer table and its two targets. Each region has its own spending habit, which the
    numeric columns do not show: the embedding has to learn it."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.standard_normal((n, len(NUMERIC))), columns=NUMERIC)
    table["region"] = rng.choice([f"region_{i:02d}" for i in range(REGIONS)], n)
    # strict=False: a small table may not hold every region; the effects left over go unused
    effects = rng.normal(0, 1.0, REGIONS)
    region_effect = dict(zip(sorted(table["region"].unique()), effects, strict=False))
    habit = table["region"].map(region_effect).to_numpy()
    score = (
        1.2 * table["income"]
        + 0.6 * table["visits"]
        - 0.4 * table["age"]
        + habit
        + 0.3 * rng.standard_normal(n)
    )
    segment = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))  # 0, 1, 2: a third each
    spend = (
        2.0
        + 0.8 * table["income"]
        + 0.5 * table["tenure"] * table["visits"]
        - 0.6 * table["discount"]
        + 0.7 * habit
        + 0.2 * rng.standard_normal(n)
    )
    return table, segment.astype("int64"), spend.to_numpy("float32")[:, None]


def to_inputs(table, mean, std):
    """The network's two inputs, by name: scaled numeric columns and the region's code."""
    numeric = ((table[NUMERIC] - mean) / std).to_numpy("float32")
    region = table["region"].str.removeprefix("region_").astype("int64").to_numpy()
    return {"numeric": numeric, "region": region}


def make_net(backend, embed=8, hidden=64):
    """Numeric columns + region embedding -> shared body -> {"segment": logits, "spend": value}."""
    if backend == "torch":
        import torch
        import torch.nn as nn

        class CustomerNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.region_embedding = nn.Embedding(REGIONS, embed)
                self.body = nn.Sequential(
                    nn.Linear(len(NUMERIC) + embed, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, hidden),
                    nn.ReLU(),
                )
                self.segment = nn.Linear(hidden, len(SEGMENTS))
                self.spend = nn.Linear(hidden, 1)

            def forward(self, numeric, region):  # fitkit calls forward(**x)
                h = self.body(torch.cat([numeric, self.region_embedding(region)], dim=1))
                return {"segment": self.segment(h), "spend": self.spend(h)}

        return CustomerNet()
    import keras

    numeric = keras.Input((len(NUMERIC),), name="numeric")
    region = keras.Input((), dtype="int64", name="region")
    embedded = keras.layers.Embedding(REGIONS, embed, name="region_embedding")(region)
    h = keras.layers.Concatenate()([numeric, embedded])
    h = keras.layers.Dense(hidden, activation="relu", name="body_1")(h)
    h = keras.layers.Dense(hidden, activation="relu", name="body_2")(h)
    outputs = {
        "segment": keras.layers.Dense(len(SEGMENTS), name="segment")(h),
        "spend": keras.layers.Dense(1, name="spend")(h),
    }
    return keras.Model({"numeric": numeric, "region": region}, outputs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--out", default=".", help="folder for the PNG (default: here)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # write PNGs; no window, no display needed
    fitkit.set_seed(0)
    n, epochs = (1500, 4) if args.quick else (8000, 12)
    table, segment, spend = make_table(n)
    print(table.head(), "\n")
    test = int(0.8 * n)  # the last 20%: a held-out test set
    mean, std = table[NUMERIC][:test].mean(), table[NUMERIC][:test].std()
    x_train, x_test = to_inputs(table[:test], mean, std), to_inputs(table[test:], mean, std)
    y_train = {"segment": segment[:test], "spend": spend[:test]}
    y_test = {"segment": segment[test:], "spend": spend[test:]}

    model = fitkit.Model(make_net(fitkit.backend()))
    model.compile(
        optimizer="adam",
        lr=3e-3,
        loss={"segment": "cross_entropy", "spend": "mse"},
        loss_weights={"segment": 1.0, "spend": 0.5},
        metrics={"segment": ["accuracy"], "spend": ["mae"]},
    )
    history = model.fit(
        x_train, y_train, batch_size=64, epochs=epochs, validation_split=0.2, verbose=0
    )
    model.summary()  # the inputs it has seen
    print("\nmetrics_names:", model.metrics_names)
    print("\nhistory (one row per epoch):")
    print(history.df.round(4).to_string(index=False))

    logs = model.validate(x_test, y_test)
    print("\ntest, per output:")
    for output in ("segment", "spend"):
        print(
            f"  {output:8s}",
            {k: round(v, 4) for k, v in logs.items() if k.startswith(output + "_")},
        )
    print(
        f"  total loss {logs['loss']:.4f} = segment_loss + 0.5 * spend_loss "
        f"= {logs['segment_loss'] + 0.5 * logs['spend_loss']:.4f}"
    )
    predictions = model.predict({name: value[:3] for name, value in x_test.items()})
    print("predict returns the dict:", {name: value.shape for name, value in predictions.items()})
    print(
        "  segments:",
        [SEGMENTS[i] for i in predictions["segment"].argmax(1)],
        "spend:",
        [f"{value:.2f}" for value in predictions["spend"][:, 0]],
    )

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = out / "multi_io_history.png"
    history.plot().savefig(curves)
    print(f"saved {curves}")
    print(
        f"RESULT segment_accuracy={logs['segment_accuracy']:.4f} "
        f"spend_mae={logs['spend_mae']:.4f} loss={logs['loss']:.4f}"
    )
