"""Config-driven runs: ``fitkit fit --config run.yaml`` and ``fitkit.run(config)``.

Owns the package's entry points; parsing (jsonargparse) is parser.py's, the class_path specs
are specs.py's, the work of a run is runner.py's. Importing this package imports neither a
framework nor jsonargparse.
"""

from .runner import COMMANDS, run

__all__ = ["COMMANDS", "run"]
