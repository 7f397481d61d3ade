"""The text classifier of examples/text_classification.py as config-driven parts: its network
and its corpus, reused from there (not copied), for examples/config/text.yaml.

The backend is fitkit's (the config's ``backend`` key), so one YAML trains on either framework:
  fitkit fit --config examples/config/text.yaml                       (torch)
  fitkit fit --config examples/config/text.yaml --backend tensorflow --run_dir runs/text_tf
Run from the repository root: the class paths import ``examples.config.text``.
"""

import fitkit
from examples.text_classification import (
    TOPICS,
    VOCABULARY,
    encode,
    make_corpus,
    make_input,
    make_net,
)


def network():
    """Embedding + Conv1D + global max pool + Dense, on the config's backend (logits)."""
    return make_net(fitkit.backend(), len(VOCABULARY), len(TOPICS))


def corpus(n_train: int = 8000):
    """Generated sentences as padded batches: {train, val, test}, a quarter of n_train each
    for val and test (the example's own split)."""
    backend = fitkit.backend()
    n_test = n_train // 4
    parts = {"train": (n_train, 0), "val": (n_test, 1), "test": (n_test, 2)}
    out = {}
    for name, (n, seed) in parts.items():
        text, labels = make_corpus(n, seed=seed)
        out[name] = make_input(backend, encode(text), labels, shuffle=name == "train")
    return out
