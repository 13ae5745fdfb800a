"""What preprocessing does to accuracy: mAP of one checkpoint under several image pipelines vs the oracle validator.

    python benchmarks/bench_preprocess_map.py --weights W.pt [--data ../shared/data/cplid-dev/data.yaml]

Same checkpoint, same val images, same ground truth, same pycocotools scoring; only the pipeline that turns
files into batches changes:

* ``exact``: the loader as shipped (OpenCV decode, the reference's resize and letterbox);
* ``pil-draft``: the loader before this change (JPEG decoded at reduced scale with ``Image.draft``, PIL bilinear);
* ``pil-full``: full decode, PIL bilinear (antialiased when shrinking);
* the oracle's own validator (``val(save_json=True)``), scored by the same code.

Two ground truths: the split's labels (``real``) and the oracle predictor's own confident boxes (``pseudo``:
at most 5 per image, conf 0.1), which keeps mAP far from zero for weakly trained weights. Prints one table
per imgsz (default 320 and 640). ``W`` is any official-format checkpoint with real signal, e.g. the one the
test suite trains (``.pytest_cache/d/cplid-oracle-*/cplid-yolov8n.pt``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
os.environ.setdefault("YOLO_OFFLINE", "1")

from oracle import ultralytics  # noqa: E402
from yolofreeze import load_model  # noqa: E402
from yolofreeze.data import loader, read_yolo, to_coco_gt  # noqa: E402
from yolofreeze.evaluation.evaluate import evaluate, score_split  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cplid-dev" / "data.yaml"


def pil_load_image(draft: bool):
    """The loader's ``load_image`` as it was before: PIL decode (optionally reduced-scale) and PIL bilinear."""
    def load(path, imgsz):
        with Image.open(path) as image:
            w0, h0 = image.size
            r = imgsz / max(w0, h0)
            size = (max(1, round(w0 * r)), max(1, round(h0 * r)))
            if draft and image.format == "JPEG" and max(size) < max(w0, h0):
                image.draft("RGB", size)
            rgb = image.convert("RGB")
        if rgb.size != size:
            rgb = rgb.resize(size, Image.BILINEAR)
        return np.asarray(rgb), (h0, w0)
    return load


def pseudo_labels(weights: Path, images: Path, imgsz: int, root: Path) -> Path:
    """A copy of the split labelled with the oracle predictor's own confident boxes; returns its data.yaml."""
    ul = ultralytics()
    (root / "images").mkdir(parents=True)
    (root / "images" / "val").symlink_to(images, target_is_directory=True)
    (root / "labels" / "val").mkdir(parents=True)
    for res in ul.YOLO(str(weights)).predict(str(images), conf=0.1, max_det=5, imgsz=imgsz, verbose=False,
                                             device="cpu"):
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                for c, (x, y, w, h) in zip(res.boxes.cls.tolist(), res.boxes.xywhn.tolist())]
        (root / "labels" / "val" / (Path(res.path).stem + ".txt")).write_text("\n".join(rows))
    return root


def oracle_map(weights: Path, data_yaml: Path, records, names, imgsz: int, out: Path) -> float:
    ul = ultralytics()
    ul.YOLO(str(weights)).val(data=str(data_yaml), imgsz=imgsz, batch=16, conf=0.001, iou=0.7, save_json=True,
                              plots=False, device="cpu", project=str(out), name="v", verbose=False)
    stem_to_id = {r.path.stem: r.image_id for r in records}
    dets = [{**d, "image_id": stem_to_id[str(d["image_id"])]}
            for d in json.loads((out / "v" / "predictions.json").read_text())]
    return score_split(to_coco_gt(records, names), dets).map50_95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--sizes", default="320,640")
    args = parser.parse_args()
    info = read_yolo(args.data)
    names = info.names
    images = info.splits["val"][0].path.parent
    variants = {"exact": loader.load_image, "pil-draft": pil_load_image(True), "pil-full": pil_load_image(False)}
    model = load_model(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for imgsz in (int(s) for s in args.sizes.split(",")):
            root = pseudo_labels(args.weights, images, imgsz, tmp / f"pseudo{imgsz}")
            (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: {names}\n")
            real = tmp / f"real{imgsz}.yaml"  # an absolute path: the oracle resolves "path: ." against the cwd
            real.write_text(f"path: {info.root}\ntrain: {images}\nval: {images}\nnames: {names}\n")
            truths = {"real": real, "pseudo": root / "data.yaml"}
            table = {}
            for truth, data_yaml in truths.items():
                records = read_yolo(data_yaml).splits["val"]
                reference = oracle_map(args.weights, data_yaml, records, names, imgsz, tmp / f"o{imgsz}{truth}")
                table[(truth, "oracle validator")] = reference
                for name, load in variants.items():
                    loader.load_image = load
                    table[(truth, name)] = evaluate(model, records, names, imgsz=imgsz, batch=16,
                                                    progress=False).map50_95
                loader.load_image = variants["exact"]
            print(f"\nimgsz {imgsz}, {len(records)} val images, mAP@50:95 (pycocotools, same scoring code)")
            print(f"{'pipeline':<18} {'real labels':>12} {'vs oracle':>10} {'pseudo labels':>14} {'vs oracle':>10}")
            for name in ["oracle validator", *variants]:
                real, pseudo = table[("real", name)], table[("pseudo", name)]
                print(f"{name:<18} {real:>12.4f} {real - table[('real', 'oracle validator')]:>+10.4f} "
                      f"{pseudo:>14.4f} {pseudo - table[('pseudo', 'oracle validator')]:>+10.4f}")


if __name__ == "__main__":
    main()
