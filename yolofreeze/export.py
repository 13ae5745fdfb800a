"""Export a detector to ONNX, and optionally quantise it to INT8.

``python -m yolofreeze.export --weights best.pt [--imgsz 640] [--dynamic] [--half] [--int8 --data DATA --calib 200]
[--opset 17] [--v10-head one2one|one2many] [--out best.onnx]``

Writes ``best.onnx`` beside the weights (or ``--out``): input ``images`` float32 ``(B, 3, H, W)``, RGB, letterboxed,
in [0, 1]; output ``output0`` ``(B, 4 + nc, A)``, xywh input pixels and sigmoid scores; names, stride, imgsz and the
source checkpoint's SHA-256 in its metadata. ``--int8`` also writes ``best.int8.onnx``, calibrated on ``--calib``
training images of ``--data``. ``eval.py`` and ``python -m yolofreeze.predict`` run either file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cli import DEFAULT_IMGSZ, ArgumentParser, entry_point, image_size, positive_int
from .data import DatasetNotFoundError, resolve_dataset
from .deploy import require
from .deploy.export import CALIBRATION_METHODS, DEFAULT_CALIBRATION, DEFAULT_OPSET, calibration_images, export_onnx, quantize_int8
from .deploy.runtime import OnnxDetector, is_onnx
from .nn import V10Detect
from .weights.checkpoints import load_model
from .weights.releases import sha256_of


def parse_args(argv: list[str] | None):
    parser = ArgumentParser("python -m yolofreeze.export", __doc__)
    parser.add_argument("--weights", required=True, help="our checkpoint or an official .pt")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    parser.add_argument("--imgsz", type=image_size, default=DEFAULT_IMGSZ, help="input size (multiple of 32)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch of a static export")
    parser.add_argument("--dynamic", action="store_true", help="batch, height and width free")
    parser.add_argument("--half", action="store_true", help="float16 weights, input and output")
    parser.add_argument("--int8", action="store_true", help="also write an INT8 model (static quantisation)")
    parser.add_argument("--data", default=None, help="dataset whose train images calibrate --int8")
    parser.add_argument("--calib", type=positive_int, default=200, help="calibration images for --int8")
    parser.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
                        help="how --int8 sets activation ranges")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--v10-head", choices=V10Detect.BRANCHES, default="one2one",
                        help="YOLOv10 branch to export: one2one (NMS-free) or one2many (+ NMS)")
    parser.add_argument("--out", default=None, help="ONNX file to write (default: the weights' name, .onnx)")
    args = parser.parse_args(argv)
    if args.int8 and not args.data:
        parser.error("--int8 needs --data: the images that calibrate the activation ranges")
    if args.int8 and args.half:
        parser.error("--int8 quantises a float32 export; leave out --half")
    if is_onnx(args.weights):
        parser.error(f"{args.weights} is already an ONNX model; export from its .pt checkpoint")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for module in ("onnx", "onnxruntime"):  # the export extra, checked before any work
        require(module)
    model = load_model(args.weights).use_v10_head(args.v10_head)
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: an ONNX file name ends in .onnx")
    calibration = None
    if args.int8:  # read the dataset before the export: a wrong --data costs nothing
        info = resolve_dataset(args.data)
        if "train" not in info.splits:
            raise DatasetNotFoundError(f"{args.data} has no train split to calibrate on")
        paths = [record.path for record in info.splits["train"]]
        calibration, unreadable = calibration_images(paths, args.imgsz, args.calib)
        if unreadable:
            print(f"calibration: {len(unreadable)} unreadable images skipped")
        if not calibration:
            raise ValueError(f"no readable calibration image in {args.data}'s train split")
    export_onnx(model, out, args.imgsz, args.batch, args.dynamic, args.half, args.opset, source=str(args.weights),
                source_sha256=sha256_of(Path(args.weights)) if Path(args.weights).is_file() else "")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, {'dynamic' if args.dynamic else 'static'} "
          f"{'float16' if args.half else 'float32'}, {args.batch if not args.dynamic else 'B'}x3x"
          f"{args.imgsz}x{args.imgsz} input)")
    if not args.half:
        print(f"check: max |onnxruntime - PyTorch| = {max_difference(model, out, args.imgsz, args.batch):.2e} "
              f"(output in input pixels and scores)")
    if calibration is not None:
        int8 = out.with_suffix(".int8.onnx")
        quantize_int8(out, int8, calibration, args.calib_method)
        print(f"wrote {int8} ({int8.stat().st_size / 2**20:.1f} MB, INT8 weights and activations, decode in float; "
              f"calibrated on {len(calibration)} images, {args.calib_method})")
    return 0


def max_difference(model, path: Path, imgsz: int, batch: int) -> float:
    """Largest absolute difference between the ONNX model at ``path`` and ``model`` on one seeded random input."""
    x = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    return float(np.abs(OnnxDetector(path)(x).numpy() - expected).max())


if __name__ == "__main__":
    raise SystemExit(main())
