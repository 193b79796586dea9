"""The `gtag` command line. ``app`` holds the group, the shared options and the consoles; each
command lives in its own module and registers itself on import: ``predict``, ``tag``, and the
smaller ``undo``, ``learn`` and ``models`` in ``commands``.

Imports stay light at the top of every module (`gtag --help` and `gtag models` load neither
numpy nor ONNX Runtime): a command imports the wings it drives inside its function.

Imports: any wing; nothing imports the cli.
"""

from gtag.cli import commands, predict, tag  # noqa: F401  (each registers its commands on main)
from gtag.cli.app import main

__all__ = ["main"]
