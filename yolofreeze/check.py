"""Check a dataset before training: ``python -m yolofreeze.check D [--decode]``.

Prints the summary table (images, instances per class and split, images without boxes) and every
problem found while reading (bad boxes, unknown classes, unreadable images …), each skipped with a count.
"""
from __future__ import annotations

from .cli import ArgumentParser, entry_point
from .data import check_dataset, format_report, resolve_dataset


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("python -m yolofreeze.check", __doc__)
    parser.add_argument("data", help="data.yaml, dataset folder, or a name: insplad, coco8, coco, demo")
    parser.add_argument("--decode", action="store_true", help="also decode every image fully (finds corrupt pixels)")
    args = parser.parse_args(argv)
    info = resolve_dataset(args.data)
    print(f"{info.format} dataset at {info.root}, {info.nc} classes")
    print(format_report(check_dataset(info, decode=args.decode)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
