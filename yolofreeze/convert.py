"""Convert official weights, or write random ones: ``python -m yolofreeze.convert``.

``python -m yolofreeze.convert yolov8n.pt weights/yolov8n.pt`` converts an official file (no Ultralytics needed, no
pickled code executed); ``python -m yolofreeze.convert yolov8n.yaml weights/random.pt --init random --nc 3`` writes
a randomly initialised model (for trying eval / predict offline).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .cli import ArgumentParser, entry_point, positive_int
from .model import MODEL_NAME, YOLO
from .weights.checkpoints import (
    YAML_SUFFIXES,
    convert_official,
    random_model,
    save_checkpoint,
)
from .weights.safe_pickle import ConversionError


def _is_spec_source(source: str) -> bool:
    """True when ``source`` names a model spec (a yaml, or a name such as ``yolov8n``) rather than weights."""
    path = Path(source)
    if path.suffix.lower() in YAML_SUFFIXES:
        return True
    return not path.exists() and path.suffix == "" and MODEL_NAME.match(path.name) is not None


def _parse_names(text: str | None) -> list[str] | None:
    """``"a,b,c"`` → ``["a", "b", "c"]``."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise ValueError(f"--names {text!r} has an empty class name (expected e.g. --names cat,dog)")
    return names


def _build_from_args(args: argparse.Namespace) -> YOLO:
    """The model the command line asks for: converted official weights, or a random initialisation."""
    if args.init == "random":
        source = Path(args.source)
        if source.is_file() and source.suffix.lower() not in YAML_SUFFIXES:
            raise ConversionError(f"--init random builds from a model yaml or name (e.g. yolov8n.yaml, yolov10s), "
                                  f"not from the file {source}")
        seed = 0 if args.seed is None else args.seed
        return random_model(args.source, nc=args.nc, names=_parse_names(args.names), seed=seed)
    if args.nc is not None or args.names is not None or args.seed is not None:
        raise ValueError("--nc, --names and --seed only apply with --init random")
    if _is_spec_source(args.source):
        raise ConversionError(f"{args.source} is a model spec, not weights: add --init random to write randomly "
                              f"initialised weights, or fetch official ones with python -m yolofreeze.download")
    return convert_official(args.source)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Convert an official Ultralytics/THU-MIG .pt into a yolofreeze checkpoint without importing ultralytics, or
    write a randomly initialised one from a model yaml (--init random)."""
    parser = ArgumentParser("python -m yolofreeze.convert", main.__doc__.replace("\n    ", " "))
    parser.add_argument("source", help="official checkpoint (yolov8n.pt), or with --init random a model yaml or "
                                       "name (yolov8n.yaml, models/yolov10s.yaml, yolov8n)")
    parser.add_argument("target", help="where to write our checkpoint, e.g. weights/yolov8n.pt")
    parser.add_argument("--init", choices=["random"], help="build the model from its spec with random weights")
    parser.add_argument("--nc", type=positive_int, help="number of classes (--init random; default: the yaml's nc)")
    parser.add_argument("--names", help="comma-separated class names (--init random), e.g. cat,dog")
    parser.add_argument("--seed", type=int, help="random seed for --init random (default 0)")
    args = parser.parse_args(argv)
    model = _build_from_args(args)
    save_checkpoint(model, args.target)
    params = sum(p.numel() for p in model.parameters())
    how = f"random init (seed {args.seed or 0})" if args.init == "random" else "converted"
    print(f"{args.source} -> {args.target}: {model.arch}, nc={model.nc}, {params:,} parameters, "
          f"stride {model.stride.int().tolist()}, {how}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
