"""batch_size with data that makes its own batches (a DataLoader, a tf.data.Dataset, a
generator, a list of batches) would be ignored: refused, as Keras refuses it, naming the
loader's own batch size; left out it is never refused, and a torch map-style Dataset is
batched with it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_unchanged, compiled, make_regression

import fitkit
from fitkit.callbacks import Callback

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")


def loader(x, y, bs=16):
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=bs
    )


def tf_data(x, y, bs=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(bs).prefetch(1)


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __iter__(self):
        return iter([(self.x[i : i + 10], self.y[i : i + 10]) for i in range(0, len(self.x), 10)])


class Rows(torch.utils.data.Dataset):  # a user's map-style Dataset: batched with batch_size
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


KINDS = {  # (make the data, what the message says of its batches)
    "DataLoader": (lambda x, y: loader(x, y), "batches of 16"),
    "tf.data": (lambda x, y: tf_data(x, y), "batches of 8"),
    "generator": (
        lambda x, y: ((x[i : i + 10], y[i : i + 10]) for i in range(0, 80, 10)),
        "batches of the size it was made with",
    ),
    "list of batches": (
        lambda x, y: [(x[i : i + 10], y[i : i + 10]) for i in range(0, 80, 10)],
        "batches of the size it was made with",
    ),
    "IterableDataset": (lambda x, y: Stream(x, y), "batches of the size it was made with"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batch_size_with_data_that_batches_itself_is_refused_before_training(kit, kind):
    x, y = make_regression(n=80)
    model, net = compiled(kit)
    before = kit.weights(net)
    make, own = KINDS[kind]
    with pytest.raises(
        fitkit.FitkitValueError,
        match=rf"fit\(batch_size=64\) is for in-memory "
        rf"data.*\({own}\).*Drop batch_size",
    ):
        model.fit(make(x, y), batch_size=64, epochs=1, verbose=0)
    assert model.history is None
    assert_unchanged(kit, net, before)


@pytest.mark.parametrize("call", ["validate", "evaluate", "predict"])
def test_validate_and_predict_refuse_it_too_naming_the_loaders_batch_size(kit, call):
    x, y = make_regression(n=80)
    model, _ = compiled(kit)
    with pytest.raises(fitkit.FitkitValueError, match=r"batch_size=32\) .*batches of 16"):
        getattr(model, call)(loader(x, y), batch_size=32)
    with pytest.raises(fitkit.FitkitValueError, match=r"batches of 8"):
        getattr(model, call)(tf_data(x, y), batch_size=32)


def test_left_out_batch_size_is_never_refused_and_loaders_keep_their_own(kit):
    x, y = make_regression(n=80)
    model, _ = compiled(kit)
    steps = StepCount()
    model.fit(loader(x, y), epochs=1, verbose=0, validation_data=tf_data(x, y), callbacks=[steps])
    assert steps.train == 5  # 80 rows in the DataLoader's batches of 16
    model.validate(tf_data(x, y))
    assert model.predict(loader(x, y)).shape == (80, 1)
    # batch_size for in-memory x, with a loader as validation data: it batches x
    model.fit(
        x, y, batch_size=40, epochs=1, verbose=0, validation_data=loader(x, y), callbacks=[steps]
    )
    assert steps.train == 2


@pytest.mark.parametrize(
    "dataset",
    [lambda x, y: torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), Rows],
)
def test_a_map_style_dataset_is_batched_with_batch_size(kit, dataset):
    x, y = make_regression(n=80)
    model, _ = compiled(kit)
    steps = StepCount()
    model.fit(dataset(x, y), batch_size=20, epochs=1, verbose=0, callbacks=[steps])
    assert steps.train == 4
    np.testing.assert_allclose(
        model.predict(dataset(x, y), batch_size=7)[:, 0],
        model.predict(x)[:, 0],
        rtol=1e-5,
        atol=1e-6,
    )


class StepCount(Callback):
    def on_train_begin(self, logs=None):
        self.train = 0

    def on_train_batch_end(self, batch, logs=None):
        self.train += 1
