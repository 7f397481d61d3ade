"""Deploy what you train: a text classifier trained, exported in every format of its backend,
each artifact run by fitkit.load_exported, then served by `fitkit serve` and queried over HTTP.

The data is generated (nothing to download): sentences of token ids where a few ids mark each of
3 topics. The network (Embedding, mean over the words, Dense) takes sentences of any length,
and the exported artifacts keep both the batch size and the sentence length free: they are
checked here on 3 sentences of 17 words after training on batches of 12 words.

Run:  python examples/deploy.py                        (torch if installed)
      FITKIT_BACKEND=tensorflow python examples/deploy.py
      python examples/deploy.py --quick --out /tmp     (small and fast, for the tests)
Needs: pip install "fitkit[export,serve]"
"""

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import numpy as np

import fitkit

VOCAB, CLASSES, WORDS = 50, 3, 12
FORMATS = {
    "torch": ("torch", "onnx", "torchscript"),
    "tensorflow": ("tf_saved_model", "litert", "onnx"),
}
EXTENSIONS = {"torch": ".pt2", "torchscript": ".pt", "onnx": ".onnx", "litert": ".tflite"}


def make_data(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sentences of filler ids (10..49) with a few ids of their topic (topic t: ids 3t..3t+2)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    tokens = rng.integers(10, VOCAB, (n, length))
    marks = rng.integers(0, 3, (n, 3)) + 3 * labels[:, None]
    tokens[:, :3] = marks
    return rng.permuted(tokens, axis=1), labels


def make_net(backend: str) -> Any:
    if backend == "torch":
        import torch

        class TextClassifier(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = torch.nn.Embedding(VOCAB, 16)
                self.out = torch.nn.Linear(16, CLASSES)

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                return self.out(self.emb(tokens).mean(dim=1))

        return TextClassifier()
    import keras

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 16)(tokens))
    return keras.Model(tokens, keras.layers.Dense(CLASSES)(pooled))


def serve_and_query(path: str, sentences: np.ndarray) -> np.ndarray:
    """Start `fitkit serve` on a free port, POST the sentences, stop it with SIGTERM."""
    server = subprocess.Popen(
        [sys.executable, "-m", "fitkit.cli", "serve", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the server says where it listens once it does
            if line.startswith("fitkit serve: listening on"):
                url = line.split()[4]
                break
        else:
            raise RuntimeError(f"fitkit serve exited with {server.wait()}")
        with urllib.request.urlopen(url + "/v1/metadata") as reply:
            print("metadata:", json.loads(reply.read())["inputs"])
        request = urllib.request.Request(
            url + "/v1/predict",
            data=json.dumps({"inputs": sentences.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as reply:
            outputs = np.array(json.loads(reply.read())["outputs"])
    finally:
        server.send_signal(signal.SIGTERM)  # finishes what is in flight, then exits 0
        code = server.wait(timeout=60)
    print(f"server stopped with exit code {code}")
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short fit, for the tests")
    parser.add_argument("--out", default="exported", help="folder for the artifacts")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    backend = fitkit.backend()
    fitkit.set_seed(0)
    x, y = make_data(600 if args.quick else 3000, WORDS, seed=0)
    if backend == "tensorflow":
        x = x.astype("int32")
    model = fitkit.Model(make_net(backend))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
    model.fit(x, y, batch_size=32, epochs=2 if args.quick else 5, verbose=0)
    print("trained:", model.validate(x, y))

    probe, _ = make_data(3, 17, seed=1)  # another batch size and sentence length
    probe = probe.astype(x.dtype)
    expected = model.predict(probe)
    paths = {}
    for fmt in FORMATS[backend]:
        path = model.export(str(out / f"text_classifier{EXTENSIONS.get(fmt, '')}"), format=fmt)
        got = fitkit.load_exported(path).predict(probe)
        paths[fmt] = path
        print(f"{fmt:<15} {path}: max |difference| from predict {np.abs(got - expected).max():.2e}")

    served = serve_and_query(paths["onnx"], probe)
    print(f"served: max |difference| from predict {np.abs(served - expected).max():.2e}")
    assert np.allclose(served, expected, atol=1e-5)


if __name__ == "__main__":
    main()
