"""The ``elfcore`` command line: one subcommand per public function.

Each subcommand lives in ``elfcore/commands/<name>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> dict``: the command computes and returns
a plain dict; :func:`main` prints it, in one way for all commands (:func:`emit`):

* with ``--json``: exactly one JSON object on stdout (:func:`elfcore.jsonsafe.dumps`:
  numpy values, paths and NaN cleaned);
* otherwise: the command's ``render(result, args) -> str | None`` (``None``: nothing
  on stdout, e.g. when the output is a file), or :func:`render_text` if it has none.

A command may also define ``exit_code(result) -> int`` (default 0). Logs and progress
bars go to stderr. An :class:`~elfcore.errors.ElfcoreError` gives exit code 1 and a
one-line message (traceback only with ``--debug``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from types import ModuleType
from typing import Any

from .errors import ElfcoreError

__all__ = ["main", "COMMANDS", "emit", "render_text"]

# name -> (module under elfcore.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "predict the ELF of a structure on a full grid and write it"),
    "bench": ("bench", "time full-grid prediction (descriptor + MLP) against a naive path"),
    "netval": ("netval", "networking value, percolation and molecularity of ELF files (topology)"),
    "info": ("info", "describe a field file (format, cell, atoms, grid, statistics)"),
    "train": ("train", "train the ELF MLP (or an ensemble) on reference ELF fields"),
    "evaluate": ("evaluate", "score a model on reference ELF fields (MAE, RMSE, R²)"),
    "zoo": ("zoo", "list or build the shipped (r_cut, l_max) model zoo"),
    "kcorrect": ("kcorrect", "correct a predicted ELF in k-space against a (sparse) reference"),
    "longrange": ("longrange", "fit the predicted long-range (no reference) correction of a local model"),
    "reproduce": ("reproduce", "regenerate the paper's tables and figures from the shipped data"),
    "reference": ("reference", "build the CP2K reference ELF data (MD, single points, QE cross-check)"),
    "screen": ("screen", "ELF topology of trajectories and structure sets on Dask, into an ASE database"),
}

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The ``elfcore`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="elfcore", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(f"elfcore.commands.{module}")
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip())
        mod.add_arguments(p)
        p.set_defaults(_command=mod)
    return parser


def render_text(result: Any, indent: int = 0) -> str:
    """Readable ``key  value`` lines of a result dict (nested dicts indented; lists of
    numbers on one line, of dicts one block per item)."""
    from .jsonsafe import to_jsonable

    obj = to_jsonable(result)
    pad = "  " * indent
    if not isinstance(obj, dict):
        return pad + _inline(obj)
    width = max((len(k) for k in obj), default=0)
    lines = []
    for key, value in obj.items():
        nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))
        if not nested:
            lines.append(f"{pad}{key:<{width}}  {_inline(value)}")
            continue
        lines.append(f"{pad}{key}")
        for item in value if isinstance(value, list) else [value]:
            lines.append(render_text(item, indent + 1))
    return "\n".join(lines)


def _inline(value: Any) -> str:
    """One JSON-ish value on one line (``None`` → ``-``; floats to 6 significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return str(value)


def emit(result: dict, args: argparse.Namespace, command: ModuleType | None = None) -> int:
    """Print a command's result (JSON with ``args.json``, else its readable form); return the exit code."""
    from .jsonsafe import dumps

    if getattr(args, "json", False):
        print(dumps(result))
    else:
        render = getattr(command, "render", None)
        text = render(result, args) if render is not None else render_text(result)
        if text:
            print(text)
    status = getattr(command, "exit_code", None)
    return int(status(result)) if status is not None else 0


def main(argv: list[str] | None = None) -> int:
    """Run one command line; return its exit code (0 ok, 1 user error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    previous = _on_sigterm(_terminate)
    try:
        return emit(command.run(args), args, command)
    except ElfcoreError as exc:
        if args.debug:
            raise
        print(f"elfcore {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        if args.debug:
            raise
        print(f"elfcore {args.command}: error: file not found: {exc.filename or exc}", file=sys.stderr)
        return 1
    except (OSError, MemoryError) as exc:  # disk full, read-only, file-size limit, permissions, out of memory
        if args.debug:
            raise
        print(f"elfcore {args.command}: error: {_os_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _on_sigterm(previous)


def _on_sigterm(handler):
    """Install a SIGTERM handler (main thread only); return the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so writers remove their temporary files."""
    raise KeyboardInterrupt


def _os_message(exc: BaseException) -> str:
    """One line for an OSError (``strerror: file``) or a MemoryError."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
    name = getattr(exc, "filename", None)
    return f"{text}: {name}" if name else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
