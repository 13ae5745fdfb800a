"""Fetch official pretrained weights into the local cache, checked by SHA-256.

``python -m yolofreeze.download yolov8n [--dir ~/.cache/yolofreeze/weights]``
"""
from __future__ import annotations

from .cli import ArgumentParser, entry_point
from .weights.releases import RELEASES, cache_dir, download_weights, sha256_of


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("python -m yolofreeze.download", __doc__)
    parser.add_argument("names", nargs="+", help=f"one or more of: {', '.join(RELEASES)}")
    parser.add_argument("--dir", default=None, help=f"cache folder (default {cache_dir()})")
    parser.add_argument("--sha256", default=None, help="expected digest (with a single name)")
    args = parser.parse_args(argv)
    if args.sha256 and len(args.names) > 1:
        parser.error("--sha256 checks one file: give a single name with it")
    for name in args.names:
        path = download_weights(name, args.dir, args.sha256)
        print(f"{path}  sha256 {sha256_of(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
