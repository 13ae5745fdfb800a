"""The block table CLI a user reads before choosing --freeze N."""
from __future__ import annotations

import subprocess
import sys

from oracle import build_oracle, save_release
from yolofreeze.inspect import main as inspect_main


def test_inspect_name_prints_every_block(capsys):
    assert inspect_main(["yolov8n"]) == 0
    out = capsys.readouterr().out
    assert "3,157,200 parameters" in out
    for i in range(23):
        assert any(line.split()[0] == str(i) for line in out.splitlines() if line.strip()), i
    assert "SPPF" in out and "64x80x80" in out and "backbone: blocks 0-9" in out
    assert "--freeze 10 = the whole backbone" in out


def test_inspect_official_checkpoint(tmp_path, capsys):
    path = save_release(build_oracle("yolov10n"), tmp_path / "yolov10n.pt")
    assert inspect_main([str(path), "--imgsz", "320"]) == 0
    out = capsys.readouterr().out
    assert "yolov10n" in out and "PSA" in out and "84x2100" in out


def test_inspect_bad_input_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "yolofreeze.inspect", str(tmp_path / "missing.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: weights file not found") and len(result.stderr.splitlines()) == 1
