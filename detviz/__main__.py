"""``python -m detviz <command>``: see :mod:`detviz.cli`."""
import sys

from detviz.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
