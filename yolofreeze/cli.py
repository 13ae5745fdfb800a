"""What every command-line entry point shares: argument types that refuse bad values before any work starts,
and one clear line on stderr with exit code 2 for bad input, never a traceback.

A CLI module writes ``main`` as a plain function of ``argv`` and decorates it with :func:`entry_point`;
``YOLOFREEZE_DEBUG=1`` shows the traceback behind an error line.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import pickle
import sys
from typing import Callable

import torch
import yaml

from .nn import V10Detect

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # what Unix tools killed by SIGPIPE report (`... | head`)
IMAGE_STRIDE = 32
DEFAULT_IMGSZ = 640

# Errors that mean "the input is wrong" (missing or malformed files, bad values, no network): one line, exit 2.
USER_ERRORS = (ValueError, OSError, yaml.YAMLError, pickle.UnpicklingError, EOFError)


def plain_text(doc: str) -> str:
    """The first line of a docstring with its ``double-backtick`` markup removed, for ``--help``."""
    return doc.strip().splitlines()[0].replace("``", "")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in ``--help`` when it has a meaningful one (not None, not an off switch) and the
    help text does not already say it; a list default reads as the words a user would type (``0``, not ``['0']``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, list) else "%(default)s"
        return f"{text} (default: {default})"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with plain-text descriptions, defaults shown in ``--help``, and one-line usage errors."""

    def __init__(self, prog: str, doc: str, **kwargs) -> None:
        super().__init__(prog=prog, description=plain_text(doc), formatter_class=_HelpFormatter, **kwargs)

    def error(self, message: str):
        """A usage error: one line on stderr, exit code 2 (argparse would print the whole usage first)."""
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def image_size(text: str) -> int:
    """``--imgsz``: a positive multiple of 32 (the largest stride of the models)."""
    value = _integer(text)
    if value <= 0 or value % IMAGE_STRIDE:
        raise argparse.ArgumentTypeError(f"{value} is not a positive multiple of {IMAGE_STRIDE} "
                                         f"(e.g. {max(IMAGE_STRIDE, round(value / IMAGE_STRIDE) * IMAGE_STRIDE)})")
    return value


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (class counts, batch sizes, ``--max-det``)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number ≥ 0 (data-loader workers)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (``--lr0``)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0 (``--weight-decay``, ``--warmup-epochs``, loss gains …)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def fraction(text: str) -> float:
    """A threshold in ``[0, 1]`` (``--conf``, ``--iou``)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def device(text: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, refused at once when that GPU is not there."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA GPU(s), cuda:0…cuda:{count - 1}")
    elif parsed.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text}: only cpu and cuda devices are supported")
    return text


def add_detection_options(parser: argparse.ArgumentParser, conf: float, onnx: bool = False) -> None:
    """How ``eval.py``, ``predict`` and ``cam`` run a detector: ``--imgsz --conf --iou --max-det --v10-head --device``
    (``onnx``: the command also runs ONNX exports, whose input size is their own: ``--imgsz`` defaults to None)."""
    parser.add_argument("--imgsz", type=image_size, default=None if onnx else DEFAULT_IMGSZ,
                        help=f"long side of the input in pixels (default {DEFAULT_IMGSZ}"
                             + (", or an ONNX model's own)" if onnx else ")"))
    parser.add_argument("--conf", type=fraction, default=conf, help="confidence threshold")
    parser.add_argument("--iou", type=fraction, default=0.7, help="NMS IoU threshold (YOLOv8, YOLOv10 one2many)")
    parser.add_argument("--max-det", type=positive_int, default=300, help="detections kept per image")
    parser.add_argument("--v10-head", choices=V10Detect.BRANCHES, default="one2one",
                        help="YOLOv10 branch: one2one (NMS-free, the paper's) or one2many (+ NMS)"
                             + ("; an ONNX model has the one it was exported with" if onnx else ""))
    parser.add_argument("--device", type=device, default=default_device(),
                        help="cpu, cuda or cuda:N" + (" (ONNX models run on the CPU)" if onnx else ""))
    if onnx:
        parser.add_argument("--threads", type=positive_int, default=None,
                            help="onnxruntime threads for an ONNX model (default: all cores)")
        parser.add_argument("--names", type=lambda text: [n.strip() for n in text.split(",")], default=None,
                            help="class names a,b,c for an ONNX model without metadata")


def default_device() -> str:
    """``cuda`` when a GPU is available, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with ``; ``)."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)) and error.filename and \
            str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def entry_point(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI's ``main(argv) -> exit code``: bad input → ``error: …`` on stderr and 2, never a traceback.

    ``--help`` and usage errors return their argparse exit code instead of raising ``SystemExit``;
    a closed stdout (``… | head``) ends quietly with 141.
    """
    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not in the interpreter's exit
            return code
        except SystemExit as stop:
            return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except USER_ERRORS as error:
            if os.environ.get("YOLOFREEZE_DEBUG"):
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return run


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into a closed pipe cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
