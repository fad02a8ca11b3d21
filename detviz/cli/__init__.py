"""Command line: ``python -m detviz <command>``.

    python -m detviz data --seed 0 --num-images 24 --out data/synthetic/val
    python -m detviz train --model gfl --steps 100 --out runs/gfl
    python -m detviz evaluate --checkpoint runs/gfl/model.pt --data data/synthetic/val --out runs/gfl-val
    python -m detviz predict --checkpoint runs/gfl/model.pt --images my_photos --out runs/gfl-photos
    python -m detviz analyze --checkpoint runs/gfl/model.pt --data data/synthetic/val --out runs/why

One module per command, each with ``add(commands)`` (its argparse subcommand) and ``run(args)``:
``data`` writes the synthetic shapes dataset, ``train`` runs :mod:`detviz.engine.train`,
``evaluate`` scores a checkpoint with pycocotools and draws the result, ``predict`` draws a
checkpoint's detections on a folder of images, ``analyze`` writes the error analysis
(:mod:`detviz.analysis.errors`) as a report. Commands that write a folder (``evaluate``,
``predict``, ``analyze``) take a new or empty ``--out`` and build it beside, renaming it into
place when everything is written (:mod:`detviz.cli.common`).
"""
from __future__ import annotations

import argparse

from detviz.cli import analyze, data, evaluate, predict, train

__all__ = ["build_parser", "main"]

COMMANDS = (data, train, evaluate, predict, analyze)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detviz", description="detviz command line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; argument errors exit with status 2, run errors with 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
        parser.exit(1, f"{parser.prog} {args.command}: error: {err}\n")
    return 0
