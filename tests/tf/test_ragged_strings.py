"""Inputs Keras's layers take as they are: RaggedTensors (rows of varying length) and strings
for a model that holds its own TextVectorization / StringLookup, trained to Keras's numbers."""

from __future__ import annotations

import numpy as np
import pytest

import fitkit


def _ragged_net():
    import keras
    import tensorflow as tf

    class MeanOfEmbeddings(keras.Model):
        def __init__(self):
            super().__init__()
            self.embed = keras.layers.Embedding(12, 4)
            self.head = keras.layers.Dense(2)

        def call(self, ids):
            dense = ids.to_tensor() if isinstance(ids, tf.RaggedTensor) else ids
            return self.head(tf.reduce_mean(self.embed(dense), axis=1))

    return MeanOfEmbeddings()


def _texts():
    rng = np.random.default_rng(0)
    words = np.array(["red", "green", "blue", "cat", "dog", "sun"])
    texts = np.array(
        [" ".join(rng.choice(words, rng.integers(1, 5))) for _ in range(64)], dtype=object
    )
    return texts, np.array(["red" in t for t in texts], dtype="int64")


def test_a_ragged_tensor_input_trains_to_kerass_numbers(tf_kit):
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(1)
    rows = [list(rng.integers(1, 12, rng.integers(1, 6))) for _ in range(48)]
    x = tf.ragged.constant(rows, dtype=tf.int64)
    y = np.array([int(r[0] > 5) for r in rows])
    theirs, ours = _ragged_net(), _ragged_net()
    theirs(x[:2]), ours(x[:2])
    ours.set_weights(theirs.get_weights())
    theirs.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    expected = theirs.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    model = fitkit.Model(ours)
    model.compile("sgd", "cross_entropy", lr=0.1)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)
    assert model.predict(x).shape == (48, 2)


def test_string_inputs_reach_the_models_own_text_vectorization(tf_kit):
    import keras

    texts, y = _texts()

    def build():
        vectorize = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=4)
        vectorize.adapt(texts.astype(str))
        return keras.Sequential(
            [
                keras.Input((), dtype="string"),
                vectorize,
                keras.layers.Embedding(10, 4),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(2),
            ]
        )

    theirs, ours = build(), build()
    ours.set_weights(theirs.get_weights())
    theirs.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    import tensorflow as tf  # Keras's fit takes tf.string tensors, fitkit numpy strings too

    expected = theirs.fit(
        tf.constant(texts.astype(str)), y, batch_size=16, epochs=2, shuffle=False, verbose=0
    ).history
    model = fitkit.Model(ours)
    model.compile("sgd", "cross_entropy", lr=0.1)
    history = model.fit(texts, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)


def test_strings_for_a_numeric_network_get_advice_that_fits(kit):
    texts, y = _texts()
    model = fitkit.Model(kit.mlp(1, 2))
    model.compile("sgd", "cross_entropy")
    with pytest.raises(fitkit.FitkitError, match=r"encode|numeric|string"):
        model.fit(texts.reshape(-1, 1), y, epochs=1, verbose=0)


def test_a_pandas_text_column_is_text_and_a_mixed_frame_is_refused(kit):
    import pandas as pd

    texts, y = _texts()
    model = fitkit.Model(kit.mlp(2, 2))
    model.compile("sgd", "cross_entropy")
    with pytest.raises(fitkit.FitkitValueError, match=r"x\['text'\] has dtype str, not numbers"):
        model.fit(pd.DataFrame({"text": texts, "n": np.arange(64)}), y, epochs=1, verbose=0)
    # a numeric network: torch refuses the strings, TF's first forward pass names the dtype
    with pytest.raises(fitkit.FitkitError, match=r"not numeric; encode it first|dtype"):
        model.fit(pd.Series(texts), y, epochs=1, verbose=0)
