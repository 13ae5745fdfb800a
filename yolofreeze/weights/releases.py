"""Fetch official pretrained weights (Ultralytics YOLOv8, THU-MIG YOLOv10) into a local cache
(the command line is :mod:`yolofreeze.download`).

Each file is downloaded to a temporary name, its SHA-256 is computed and stored beside it
(``yolov8n.pt.sha256``), and only then renamed into place; later calls verify the cached file
against that digest (and against ``sha256=`` when the caller knows the expected one).
``YOLOFREEZE_WEIGHTS_URL`` replaces the release base URLs (a mirror, or a local server in tests).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm


LOGGER = logging.getLogger(__name__)

V8_RELEASE = "https://github.com/ultralytics/assets/releases/download/v8.2.0"
V10_RELEASE = "https://github.com/THU-MIG/yolov10/releases/download/v1.1"
RELEASES = {**{f"yolov8{s}": V8_RELEASE for s in "nsmlx"}, **{f"yolov10{s}": V10_RELEASE for s in "nsmblx"}}


def cache_dir() -> Path:
    """``$YOLOFREEZE_WEIGHTS`` or ``~/.cache/yolofreeze/weights``."""
    return Path(os.environ.get("YOLOFREEZE_WEIGHTS", Path.home() / ".cache" / "yolofreeze" / "weights"))


def official_name(weights: str | Path) -> str | None:
    """The official release ``weights`` names when it is a bare name that is not a local file (``"yolov8n"``,
    ``"yolov10s.pt"``): ``"yolov8n"``; else None."""
    path = Path(weights)
    if path.exists() or path.parent != Path(".") or path.suffix not in ("", ".pt"):
        return None
    return path.stem.lower() if path.stem.lower() in RELEASES else None


def weights_url(name: str) -> str:
    """Download URL of an official checkpoint, honouring ``YOLOFREEZE_WEIGHTS_URL``."""
    if name not in RELEASES:
        raise ValueError(f"unknown official weights {name!r}; known: {', '.join(RELEASES)}")
    base = os.environ.get("YOLOFREEZE_WEIGHTS_URL", RELEASES[name]).rstrip("/")
    return f"{base}/{name}.pt"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_weights(name: str, directory: str | Path | None = None, sha256: str | None = None,
                     timeout: float = 30.0) -> Path:
    """Return the local path of official weights ``name`` (e.g. ``"yolov8n"``), downloading them if needed.

    Raises ``ConnectionError`` with the URL and the manual alternative when offline, ``ValueError``
    when a digest does not match (the bad file is not kept).
    """
    name = re.sub(r"\.pt$", "", name.lower())
    directory = Path(directory) if directory else cache_dir()
    target, record = directory / f"{name}.pt", directory / f"{name}.pt.sha256"
    if target.is_file():
        actual = sha256_of(target)
        known = record.read_text().strip() if record.is_file() else None
        for expected in (sha256, known):
            if expected and actual != expected:
                raise ValueError(f"{target} has SHA-256 {actual}, expected {expected}: delete it and download again")
        return target
    url = weights_url(name)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}.pt", leave=False) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        actual = sha256_of(Path(tmp))
        if sha256 and actual != sha256:
            raise ValueError(f"{url} has SHA-256 {actual}, expected {sha256}; not kept")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise ConnectionError(f"could not download {url}: {err}. Offline? Download it elsewhere and pass the file "
                              f"path instead, or place it at {target}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    record.write_text(actual + "\n")
    LOGGER.info("downloaded %s to %s (sha256 %s)", url, target, actual)
    return target
