"""What a framework's error means: by its type where the framework gives one (IndexError,
torch.AcceleratorError), else by its message's words, kept here in one place.

Owns the recognising only, each rule pinned by tests/test_framework_messages.py against the
real errors of the pinned versions; what to tell the user is checks.py's. Imports no framework.
"""

from __future__ import annotations

import sys

SHAPE, INDEX, DTYPE, DEVICE, CUDA_ASSERT = "shape", "index", "dtype", "device", "cuda_assert"

# A forward pass's failures. No type tells these apart: torch raises RuntimeError for a shape
# or dtype mismatch, Keras ValueError, TensorFlow's ops InvalidArgumentError for all of them;
# so their words do. Checked in order (Keras's shape messages also list the inputs' dtypes).
FORWARD_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        SHAPE,
        (
            "shapes cannot be multiplied",  # torch: a Linear's input width
            "size mismatch",  # torch, older kernels
            "incompatible with the layer",  # Keras: a layer's input spec
            "expected axis",  # Keras: the same, the axis named
            "Matrix size-incompatible",  # TensorFlow's MatMul (a tf.Module)
        ),
    ),
    (INDEX, ("index out of range", "indices[", "out of bounds")),  # TF's gather: no own type
    (
        DTYPE,
        ("scalar type", "same dtype", "Expected tensor for argument", "must be of type"),
    ),
)

# A metric's failures on a first batch (the user's or the framework's code), matched in lower
# case: a device mismatch (torch: RuntimeError; a device tensor to numpy: TypeError), then a
# shape one (torch's broadcasting: RuntimeError; TensorFlow's: InvalidArgumentError).
METRIC_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (DEVICE, ("same device", "device type")),
    (SHAPE, ("shape", "size", "dimension", "broadcast", "rank", "incompatible")),
)


def said(err: BaseException | str, words: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    """The first kind whose words the message holds (``METRIC_WORDS`` in lower case), or None.

    The one place fitkit reads an error's text: only for errors that have no type of their own
    (see the tables above)."""
    text = str(err)
    lower = words is METRIC_WORDS
    for kind, needles in words:
        if any(n in (text.lower() if lower else text) for n in needles):
            return kind
    return None


def is_cuda_assert(err: BaseException) -> bool:
    """A CUDA kernel's assert: the process's CUDA context cannot be used after it."""
    torch = sys.modules.get("torch")  # an error of torch's means torch is imported
    accelerator = getattr(torch, "AcceleratorError", None)
    # torch raises AcceleratorError for every CUDA error; the assert has no type of its own
    return (
        accelerator is not None
        and isinstance(err, accelerator)
        and "device-side assert" in str(err)
    )


def forward_kind(err: BaseException) -> str | None:
    """What a failed forward pass's error says: its type first, then its words."""
    if is_cuda_assert(err):
        return CUDA_ASSERT
    if isinstance(err, IndexError):  # torch's out-of-range index (an Embedding's id)
        return INDEX
    return said(err, FORWARD_WORDS)
