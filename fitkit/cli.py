"""The ``fitkit`` command: ``fitkit info`` prints versions, the backend and its devices.

Owns argument parsing only; it asks the other modules for everything it prints.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import platform


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info() -> None:
    from . import __version__, backend, devices

    print(f"fitkit {__version__}, python {platform.python_version()}")
    for dist in ("torch", "tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas"):
        print(f"  {dist:<15}{_version(dist)}")
    name = backend()
    print(f"backend: {name}")
    for dev in devices.list_devices():
        print(f"  device: {dev['name']} ({dev['type']})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fitkit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backend and devices")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()


if __name__ == "__main__":
    main()
