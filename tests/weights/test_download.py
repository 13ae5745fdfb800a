"""Official-weights download helper, against a local HTTP server (no internet here)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from yolofreeze.download import main as download_main
from yolofreeze.weights.releases import download_weights, sha256_of, weights_url


@pytest.fixture
def local_server(tmp_path, monkeypatch):
    """Serve tmp_path/served over loopback and point YOLOFREEZE_WEIGHTS_URL at it."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("YOLOFREEZE_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}")
    yield served
    server.shutdown()


def test_downloads_verifies_and_caches(local_server, tmp_path):
    payload = bytes(range(256)) * 4000
    (local_server / "yolov8n.pt").write_bytes(payload)
    cache = tmp_path / "cache"
    import hashlib
    expected = hashlib.sha256(payload).hexdigest()
    path = download_weights("yolov8n", cache, sha256=expected)
    assert path.read_bytes() == payload
    assert (cache / "yolov8n.pt.sha256").read_text().strip() == expected
    (local_server / "yolov8n.pt").unlink()  # second call must come from the cache
    assert download_weights("yolov8n.pt", cache) == path
    assert not list(cache.glob("*.part"))


def test_wrong_digest_is_not_kept(local_server, tmp_path):
    (local_server / "yolov10n.pt").write_bytes(b"abc")
    with pytest.raises(ValueError, match="expected"):
        download_weights("yolov10n", tmp_path / "c", sha256="0" * 64)
    assert not (tmp_path / "c" / "yolov10n.pt").exists()


def test_corrupted_cache_is_detected(local_server, tmp_path):
    (local_server / "yolov8s.pt").write_bytes(b"good bytes")
    path = download_weights("yolov8s", tmp_path)
    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="delete it"):
        download_weights("yolov8s", tmp_path)


def test_offline_error_names_url_and_alternative(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("YOLOFREEZE_WEIGHTS_URL", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(ConnectionError, match=r"http://127.0.0.1:9/yolov8m.pt.*Offline\?"):
        download_weights("yolov8m", tmp_path)
    assert download_main(["yolov8m", "--dir", str(tmp_path)]) == 2
    assert "could not download" in capsys.readouterr().err


def test_url_table_covers_all_official_models(monkeypatch):
    monkeypatch.delenv("YOLOFREEZE_WEIGHTS_URL", raising=False)
    assert weights_url("yolov8x").endswith("/yolov8x.pt") and "ultralytics" in weights_url("yolov8x")
    assert "THU-MIG" in weights_url("yolov10b")
    with pytest.raises(ValueError, match="unknown official weights"):
        weights_url("yolov5s")


def test_sha256_of_a_file_read_in_chunks_equals_the_digest_of_its_bytes(tmp_path):
    data = bytes(range(256)) * 41 + b"tail!"  # 10501 bytes: 1500 chunks of 7 bytes and one of 1
    f = tmp_path / "x"
    f.write_bytes(data)
    assert sha256_of(f, chunk=7) == sha256_of(f) == hashlib.sha256(data).hexdigest()
    f.write_bytes(b"")
    assert sha256_of(f) == hashlib.sha256(b"").hexdigest()
