"""The converter never executes pickled code; every file it cannot use is one clear error; the convert CLI.

Yaml vintages and the THU-MIG release are checked against the oracle in test_convert_vintages.py.
"""
from __future__ import annotations

import os
import shutil
import zipfile

import pytest
import torch

from oracle import build_oracle, save_release
from yolofreeze import load_model
from yolofreeze.convert import main as convert_main
from yolofreeze.weights.checkpoints import ConversionError, convert_official, save_checkpoint
from yolofreeze.model import MODELS_DIR
from yolofreeze.weights.safe_pickle import UnsafeCheckpointError, safe_load

READERS = [load_model, convert_official]


class RunsShell:
    """A pickle payload: unpickling it calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload_kind", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload_kind, capsys):
    marker = tmp_path / "pwned"
    payload = RunsShell(f"touch {marker}") if payload_kind == "os.system" else CallsEval()
    evil = tmp_path / "evil.pt"
    torch.save({"model": payload, "ema": None}, evil)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        safe_load(evil)
    for read in READERS:
        with pytest.raises(ConversionError) as caught:
            read(evil)
        message = str(caught.value)
        assert "\n" not in message and str(evil) in message
        assert "refused" in message and "allow-list" in message and "nothing from this file was executed" in message
        assert ("system" if payload_kind == "os.system" else "builtins.eval") in message  # says which global
    assert convert_main([str(evil), str(tmp_path / "out.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict:
    """One official release file and one of our checkpoints (yolov8n), written once for this module."""
    folder = tmp_path_factory.mktemp("good")
    official = save_release(build_oracle("yolov8n"), folder / "official.pt")
    ours = save_checkpoint(convert_official(official), folder / "ours.pt")
    return {"official": official, "ours": ours}


def assert_one_clear_error(read, path, *fragments: str) -> None:
    """``read(path)`` raises ConversionError: one line naming the file and containing ``fragments``."""
    with pytest.raises(ConversionError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("read", READERS)
def test_a_text_file_named_pt_is_one_clear_error(read, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("<html>404 Not Found</html>\n")
    assert_one_clear_error(read, path, "a text file, not a PyTorch checkpoint")


@pytest.mark.parametrize("read", READERS)
def test_an_empty_pt_is_one_clear_error(read, tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert_one_clear_error(read, path, "empty")


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("kind", ["official", "ours"])
def test_a_truncated_pt_is_one_clear_error(read, kind, good_files, tmp_path):
    data = good_files[kind].read_bytes()
    path = tmp_path / f"{kind}-cut.pt"
    path.write_bytes(data[: len(data) // 2])
    assert_one_clear_error(read, path, "truncated")


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("kind", ["official", "ours"])
def test_corrupted_tensor_bytes(read, kind, good_files, tmp_path):
    """A flipped byte inside a stored tensor is caught by the zip CRC (torch.load alone would not notice)."""
    data = bytearray(good_files[kind].read_bytes())
    with zipfile.ZipFile(good_files[kind]) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)  # the biggest stored tensor
    header = 30 + len(member.filename.encode()) + len(member.extra)  # local header fields before the data
    data[member.header_offset + header + member.file_size // 2] ^= 0xFF
    path = tmp_path / f"{kind}-flipped.pt"
    path.write_bytes(data)
    assert_one_clear_error(read, path, "damaged checkpoint", "CRC", member.filename)


@pytest.mark.parametrize("read", READERS)
def test_model_yaml_passed_as_weights(read, tmp_path):
    path = tmp_path / "yolov8n.yaml"
    shutil.copy(MODELS_DIR / "yolov8.yaml", path)
    assert_one_clear_error(read, path, "is a model yaml, not weights", "--model", "--init random")


@pytest.mark.parametrize("read", READERS)
def test_directory_passed_as_weights(read, tmp_path):
    (tmp_path / "best.pt").mkdir()
    assert_one_clear_error(read, tmp_path / "best.pt", "is a directory")


@pytest.mark.parametrize("read", READERS)
def test_a_missing_weights_file_is_named_in_the_error(read, tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read(tmp_path / "nothing.pt")


def test_convert_official_on_our_checkpoint_says_so(good_files):
    assert_one_clear_error(convert_official, good_files["ours"], "already a yolofreeze checkpoint")


def test_ema_used_when_model_is_none(tmp_path):
    oracle = build_oracle("yolov8n")
    path = tmp_path / "ema_only.pt"
    torch.save({"epoch": 5, "model": None, "ema": oracle.half(), "optimizer": None}, path)
    model = convert_official(path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - oracle.float().eval()(x)[0]).abs().max() <= 1e-4


def test_activation_mismatch_is_refused(tmp_path):
    oracle = build_oracle("yolov8n")
    oracle.model[9].cv1.act = torch.nn.Identity()  # what Ultralytics 8.4 builds from yaml
    with pytest.raises(ConversionError, match="model.9.cv1.act"):
        convert_official(save_release(oracle, tmp_path / "v84.pt"))


def test_convert_cli_writes_weights_only_checkpoint(tmp_path, capsys):
    src = save_release(build_oracle("yolov10n"), tmp_path / "yolov10n.pt")
    assert convert_main([str(src), str(tmp_path / "w" / "yolov10n.pt")]) == 0
    assert "yolov10n" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "w" / "yolov10n.pt", weights_only=True)
    assert ckpt["arch"] == "yolov10n" and len(ckpt["names"]) == 80


def test_not_a_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00\xff\xfe not a checkpoint")
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint"):
        safe_load(bad)


def write_random(tmp_path, source: str, *options: str, name: str = "random.pt") -> tuple[int, dict]:
    """Run ``convert SOURCE OUT --init random OPTIONS``; exit code and the written checkpoint (weights_only)."""
    target = tmp_path / name
    code = convert_main([source, str(target), "--init", "random", *options])
    return code, torch.load(target, map_location="cpu", weights_only=True) if code == 0 else {}


def test_init_random_writes_a_loadable_checkpoint_with_the_requested_classes(tmp_path):
    spec = tmp_path / "yolov10n.yaml"
    shutil.copy(MODELS_DIR / "yolov10n.yaml", spec)
    code, ckpt = write_random(tmp_path, str(spec), "--nc", "3", "--names", "cat, dog,bird")
    assert code == 0
    assert ckpt["arch"] == "yolov10n" and ckpt["nc"] == 3 and ckpt["names"] == ["cat", "dog", "bird"]
    model = load_model(tmp_path / "random.pt")
    assert model.nc == 3 and model.names == ["cat", "dog", "bird"] and model.is_v10
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("source, arch", [("yolov8n", "yolov8n"), ("models/yolov8s.yaml", "yolov8s"),
                                          ("models/yolov10s.yaml", "yolov10s")])
def test_init_random_from_a_model_name(source, arch, tmp_path, monkeypatch):
    monkeypatch.chdir(MODELS_DIR.parent)
    code, ckpt = write_random(tmp_path, source, "--names", "a,b")
    assert code == 0 and ckpt["arch"] == arch and ckpt["nc"] == 2 and ckpt["names"] == ["a", "b"]


def test_init_random_refuses_a_weights_file(good_files, tmp_path, capsys):
    assert convert_main([str(good_files["ours"]), str(tmp_path / "out.pt"), "--init", "random"]) == 2
    assert "--init random builds from a model yaml or name" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_init_random_seed_decides_the_weights(tmp_path):
    runs = {name: write_random(tmp_path, "yolov8n", "--seed", seed, name=name)[1]["state_dict"]
            for name, seed in (("a.pt", "0"), ("b.pt", "0"), ("c.pt", "1"))}
    assert all(torch.equal(v, runs["b.pt"][k]) for k, v in runs["a.pt"].items())
    conv = "model.0.conv.weight"
    assert not torch.equal(runs["a.pt"][conv], runs["c.pt"][conv])


@pytest.mark.parametrize("argv, fragment", [
    (["models/yolov8.yaml"], "--init random"),  # a yaml without --init
    (["yolov8n"], "--init random"),  # a model name without --init
    (["yolov8n", "--init", "random", "--nc", "2", "--names", "a,b,c"], "3 class names given for nc=2"),
    (["yolov8n", "--init", "random", "--names", "a,,b"], "empty class name"),
    (["yolov8n", "--nc", "2"], "only apply with --init random"),
    (["yolov9z", "--init", "random"], "neither a known name"),
    (["missing.pt"], "weights file not found"),
])
def test_convert_cli_errors_are_one_line_exit_2(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(MODELS_DIR.parent)
    target = tmp_path / "out.pt"
    assert convert_main([argv[0], str(target), *argv[1:]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and fragment in captured.err
    assert not target.exists()
