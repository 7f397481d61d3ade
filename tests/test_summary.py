"""Model.summary on both backends: what it runs with no argument, integer inputs, and
parameter counts that add up (Keras's count_params(); torch's root-level parameters)."""

from __future__ import annotations

import numpy as np
import pytest

import fitkit
from fitkit.errors import FitkitValueError


def rows_total(frame) -> int:
    return int(frame["params"].sum())


# ------------------------------------------------------------------ both backends


def test_int_input_shape_means_one_dimension(kit):
    model = fitkit.Model(kit.mlp(8, 1))
    assert model.summary(input_shape=8, print_fn=None).equals(
        model.summary(input_shape=(8,), print_fn=None)
    )
    assert model.summary(8, print_fn=None)["output_shape"].iloc[-1] == "[-1, 1]"


def test_no_argument_after_fitkit_saw_a_batch(kit):
    model = fitkit.Model(kit.two_input_net(3, 2))
    x = {"a": np.ones((5, 3), "float32"), "b": np.ones((5, 2), "float32")}
    model.predict(x)
    frame = model.summary(print_fn=None)
    assert rows_total(frame) == (3 * 8 + 8) + (2 * 8 + 8) + (16 + 1)
    assert frame["output_shape"].iloc[-1] == "[-1, 1]"


def test_bad_input_shape_names_the_argument(kit):
    model = fitkit.Model(kit.mlp(4, 1))
    with pytest.raises(FitkitValueError, match=r"input_shape.*without the batch"):
        model.summary(input_shape=(None, 4), print_fn=None)


def test_printed_totals_match_the_rows(kit, capsys):
    model = fitkit.Model(kit.mlp(4, 2))
    frame = model.summary(input_shape=4)
    out = capsys.readouterr().out
    assert f"Total params: {rows_total(frame)}" in out and rows_total(frame) == 4 * 16 + 16 + 34


# ------------------------------------------------------------------ torch


def test_torch_with_nothing_known_says_what_to_pass(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 1))
    with pytest.raises(FitkitValueError, match=r"input_shape=.*input_data=.*fit/predict"):
        model.summary(print_fn=None)


def test_torch_root_level_parameters_have_rows(torch_kit):
    torch, nn = torch_kit.torch, torch_kit.torch.nn

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls = nn.Parameter(torch.zeros(1, 1, 6))  # on the root
            self.body = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
            self.body.pos = nn.Parameter(torch.zeros(1, 4, 6))  # on a non-leaf module
            self.head = nn.Linear(6, 2)
            self.spare = nn.Linear(3, 3)  # never called

        def forward(self, x):
            h = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.body.pos
            return self.head(self.body(h).mean(1))

    net = Tokens()
    frame = fitkit.Model(net).summary(input_shape=(3, 6), print_fn=None)
    assert rows_total(frame) == sum(p.numel() for p in net.parameters()) == 6 + 24 + 42 + 14 + 12
    layers = frame["layer"].tolist()
    assert layers[0] == "cls (Parameter)" and frame["output_shape"].iloc[0] == "[1, 1, 6]"
    assert layers.index("body.pos (Parameter)") == layers.index("body.0 (Linear)") - 1
    assert frame.set_index("layer").loc["spare (Linear)", "output_shape"] == "-"


def test_torch_tied_weights_count_once(torch_kit):
    nn = torch_kit.torch.nn
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 4, bias=False))
    net[2].weight = net[0].weight
    frame = fitkit.Model(net).summary(input_shape=4, print_fn=None)
    assert rows_total(frame) == 16 == sum(p.numel() for p in net.parameters())


def test_torch_inputs_read_by_an_embedding_get_integer_zeros(torch_kit):
    torch, nn = torch_kit.torch, torch_kit.torch.nn

    class Mixed(nn.Module):  # two index inputs around a float one: no single-input retry fits
        def __init__(self):
            super().__init__()
            self.words, self.tags = nn.Embedding(10, 4), nn.Embedding(5, 4)
            self.dense = nn.Linear(3, 4)

        def forward(self, words, x, tags):
            seen.append((words.dtype, x.dtype, tags.dtype))
            return self.words(words).mean(1) + self.dense(x) + self.tags(tags[:, 0])

    seen = []
    model = fitkit.Model(Mixed())
    frame = model.summary(input_shape=[(7,), (3,), (2,)], print_fn=None)
    assert seen[-1] == (torch.int64, torch.float32, torch.int64)
    assert frame.set_index("layer").loc["words (Embedding)", "output_shape"] == "[-1, 7, 4]"
    seen.clear()
    model.summary(input_shape={"words": 7, "x": 3, "tags": 2}, print_fn=None)
    assert seen[-1] == (torch.int64, torch.float32, torch.int64)


def test_torch_index_error_without_embedding_retries_with_integers(torch_kit):
    torch, nn = torch_kit.torch, torch_kit.torch.nn

    class Lookup(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(10, 3))
            self.out = nn.Linear(3, 1)

        def forward(self, ids):
            return self.out(self.table[ids])

    frame = fitkit.Model(Lookup()).summary(input_shape=(), print_fn=None)
    assert frame["layer"].tolist() == ["table (Parameter)", "out (Linear)"]
    assert rows_total(frame) == 30 + 4


def test_torch_a_real_error_is_still_reported(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 1))
    with pytest.raises(FitkitValueError, match="could not run the network"):
        model.summary(input_shape=5, print_fn=None)


# ------------------------------------------------------------------ tensorflow


def test_tf_no_argument_uses_declared_inputs(tf_kit):
    model = fitkit.Model(tf_kit.mlp(4, 1))
    frame = model.summary(print_fn=None)
    assert frame["output_shape"].tolist() == ["[-1, 16]", "[-1, 1]"]


def test_tf_subclassed_model_unknown_until_called(tf_kit):
    keras = tf_kit.keras

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Sub()
    with pytest.raises(FitkitValueError, match=r"input_shape=.*input_data="):
        fitkit.Model(net).summary(print_fn=None)
    net(np.zeros((3, 5), "float32"))  # called once outside fitkit: its shapes are known
    frame = fitkit.Model(net).summary(print_fn=None)
    assert frame["output_shape"].tolist() == ["[-1, 2]"] and rows_total(frame) == 12


def test_tf_declared_integer_inputs_get_integer_zeros(tf_kit):
    from fitkit.tf import summary

    keras, tf = tf_kit.keras, tf_kit.tf
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    dense = keras.Input((3,), name="numeric")  # not "dense": Keras auto-names layers so
    embedded = keras.layers.Embedding(20, 4, name="embedding")(tokens)
    h = keras.layers.GlobalAveragePooling1D()(embedded)
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([h, keras.layers.Dense(4)(dense)]))
    net = keras.Model({"tokens": tokens, "numeric": dense}, out)
    listed = keras.Model([tokens, dense], out)
    for shapes in ({"tokens": 6, "numeric": 3}, {"numeric": (3,), "tokens": (6,)}, None):
        frame = fitkit.Model(net).summary(shapes, print_fn=None)
        assert rows_total(frame) == net.count_params() == 80 + 16 + 9
        assert frame.set_index("layer").loc["embedding (Embedding)", "output_shape"] == "[-1, 6, 4]"
    assert rows_total(fitkit.Model(listed).summary([(6,), 3], print_fn=None)) == 105
    example = summary.zeros({"numeric": (3,), "tokens": (6,)}, summary.declared_inputs(net))
    assert example["tokens"].dtype == tf.int32 and example["numeric"].dtype == tf.float32
    by_position = summary.zeros([(6,), (3,)], summary.declared_inputs(listed))
    assert [t.dtype for t in by_position] == [tf.int32, tf.float32]
    by_name = summary.zeros({"tokens": (6,), "numeric": (3,)}, summary.declared_inputs(listed))
    assert by_name["tokens"].dtype == tf.int32
    assert summary.zeros((6,), summary.declared_inputs(keras.Model(tokens, h))).dtype == tf.int32


def test_tf_counts_equal_keras_with_dropout_and_batchnorm(tf_kit, capsys):
    keras = tf_kit.keras
    net = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(4),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1),
        ]
    )
    frame = fitkit.Model(net).summary()
    out = capsys.readouterr().out
    trainable = sum(int(np.prod(w.shape)) for w in net.trainable_weights)
    assert rows_total(frame) == net.count_params() == 48 + 32 + 36 + 5
    assert f"Total params: {net.count_params()}\n" in out
    assert f"Trainable params: {trainable}\n" in out and trainable == net.count_params() - 16
    assert "Non-trainable params: 16\n" in out  # BatchNormalization's moving mean / variance


def test_tf_weights_of_a_non_leaf_layer_have_rows(tf_kit):
    keras = tf_kit.keras

    class WithToken(keras.Model):
        def __init__(self):
            super().__init__()
            self.token = self.add_weight(shape=(1, 4), name="token")
            self.body = keras.Sequential([keras.layers.Dense(4), keras.layers.Dropout(0.1)])
            self.head = keras.layers.Dense(1)

        def call(self, x):
            return self.head(self.body(x) + self.token)

    net = WithToken()
    net(np.zeros((2, 3), "float32"))
    frame = fitkit.Model(net).summary(print_fn=None)
    assert rows_total(frame) == net.count_params() == 4 + 16 + 5
    assert frame["layer"].iloc[0] == "token (Variable)"
