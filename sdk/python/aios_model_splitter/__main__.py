"""``python -m aios_model_splitter package.module:SplitterClass``: runs that splitter class in this task's
environment and exits 0 when the task completed, 1 when it failed (2 on a bad argument)."""

from __future__ import annotations

import importlib
import logging
import sys

from .errors import ContextError
from .executor import execute_model_splitter


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python -m aios_model_splitter package.module:SplitterClass", file=sys.stderr)
        return 2
    module_name, _, attr = args[0].partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        print(f"aios_model_splitter: cannot load {args[0]}: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return execute_model_splitter(target)
    except ContextError as err:
        print(f"aios_model_splitter: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
