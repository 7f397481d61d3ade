"""The version, in one place: the package metadata and ``fitkit.__version__`` read it."""

__version__ = "0.1.0"
