"""Every CLI answers bad input with one clear line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval as eval_cli
import train as train_cli
from conftest import PROJECT_ROOT
from oracle import build_oracle, save_release
from yolofreeze import check, convert, download, inspect, predict
from yolofreeze.weights.checkpoints import save_checkpoint
from yolofreeze.model import build_model


@pytest.fixture
def demo_env(tmp_path, monkeypatch):
    """Named datasets (the generated demo) live under tmp_path; the working directory is tmp_path."""
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def image_file(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (96, 64), (120, 60, 30)).save(path)
    return path


def commands_with_weights(weights: Path, tmp_path: Path) -> dict[str, tuple]:
    """Each CLI that reads a weights file, called with ``weights``."""
    return {
        "eval": (eval_cli.main, ["--weights", str(weights), "--data", "demo", "--workers", "0"]),
        "predict": (predict.main, ["--weights", str(weights), "--source", str(image_file(tmp_path))]),
        "inspect": (inspect.main, [str(weights)]),
        "convert": (convert.main, [str(weights), str(tmp_path / "out.pt")]),
        "train": (train_cli.main, ["--model", str(weights), "--data", "demo"]),
    }


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


def run_each(commands: dict[str, tuple], capsys, *fragments: str) -> None:
    for name, (main, argv) in commands.items():
        code = main(argv)
        assert_one_line_error(code, capsys.readouterr().err, *fragments)


def bad_weights(kind: str, tmp_path: Path) -> Path:
    """A file passed where a checkpoint is expected, broken in one way."""
    path = tmp_path / f"{kind}.pt"
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("truncated_ours", "truncated_official"):
        full = tmp_path / "full.pt"
        if kind == "truncated_ours":
            save_checkpoint(build_model("yolov8n", nc=3), full)
        else:
            save_release(build_oracle("yolov8n", nc=3), full)
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "unsafe":
        torch.save({"model": eval}, path)  # names builtins.eval: must be refused, never called
    elif kind == "yaml":
        path = tmp_path / "yolov8n-custom.yaml"
        path.write_text((PROJECT_ROOT / "models" / "yolov8.yaml").read_text())
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "truncated_ours", "truncated_official", "unsafe"])
def test_broken_weights_file_is_one_line(kind, demo_env, capsys):
    weights = bad_weights(kind, demo_env)
    run_each(commands_with_weights(weights, demo_env), capsys, weights.name)


def test_yaml_passed_as_weights_is_one_line(demo_env, capsys):
    weights = bad_weights("yaml", demo_env)
    commands = commands_with_weights(weights, demo_env)
    del commands["inspect"], commands["train"]  # there a yaml is a valid model spec
    run_each(commands, capsys, weights.name)


@pytest.mark.parametrize("kind,fragment", [
    ("syntax", "yaml"),
    ("not_a_mapping", "mapping"),
    ("names_with_gaps", "without gaps"),
])
def test_bad_data_yaml_is_one_line(kind, fragment, demo_env, capsys):
    data = demo_env / "data.yaml"
    (demo_env / "images" / "val").mkdir(parents=True)
    text = {"syntax": "path: .\nval: [images/val\nnames: {0: a}\n",
            "not_a_mapping": "- images/val\n- names\n",
            "names_with_gaps": "path: .\ntrain: images/val\nval: images/val\nnames:\n  0: a\n  2: b\n"}[kind]
    data.write_text(text)
    weights = save_release(build_oracle("yolov8n", nc=2), demo_env / "w.pt")
    run_each({"check": (check.main, [str(data)]),
              "eval": (eval_cli.main, ["--weights", str(weights), "--data", str(data), "--workers", "0"]),
              "train": (train_cli.main, ["--data", str(data)])}, capsys, fragment)


@pytest.mark.parametrize("kind,fragment", [("syntax", "yaml"), ("not_a_mapping", "model spec")])
def test_bad_model_yaml_is_one_line(kind, fragment, tmp_path, capsys):
    spec = tmp_path / "mymodel.yaml"
    spec.write_text("backbone: [[-1, 1, Conv\n" if kind == "syntax" else "- 1\n- 2\n")
    run_each({"inspect": (inspect.main, [str(spec)])}, capsys, fragment)


def test_cuda_without_gpu_is_one_line(demo_env, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image = image_file(demo_env)
    run_each({"eval": (eval_cli.main, ["--weights", "w.pt", "--data", "demo", "--device", "cuda"]),
              "predict": (predict.main, ["--weights", "w.pt", "--source", str(image), "--device", "cuda"]),
              "train": (train_cli.main, ["--data", "demo", "--device", "cuda"])}, capsys, "no CUDA GPU")


def test_compile_without_a_compiler_is_one_line(demo_env, capsys, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    run_each({"train": (train_cli.main, ["--data", "demo", "--compile"])}, capsys, "needs a C++ compiler")


def test_zero_classes_is_one_line(tmp_path, capsys):
    run_each({"inspect": (inspect.main, ["yolov8n", "--nc", "0"]),
              "convert": (convert.main, ["yolov8n", str(tmp_path / "r.pt"), "--init", "random", "--nc", "0"])},
             capsys, "at least 1")


def test_image_size_not_a_multiple_of_32_is_one_line(demo_env, capsys):
    image = image_file(demo_env)
    run_each({"eval": (eval_cli.main, ["--weights", "w.pt", "--data", "demo", "--imgsz", "100"]),
              "predict": (predict.main, ["--weights", "w.pt", "--source", str(image), "--imgsz", "100"]),
              "inspect": (inspect.main, ["yolov8n", "--imgsz", "100"]),
              "train": (train_cli.main, ["--data", "demo", "--imgsz", "100"])}, capsys, "multiple of 32")


def test_missing_inputs_are_one_line(demo_env, capsys):
    run_each({"eval": (eval_cli.main, ["--weights", "missing.pt", "--data", "demo"]),
              "predict": (predict.main, ["--weights", "missing.pt", "--source", str(image_file(demo_env))]),
              "inspect": (inspect.main, ["missing.pt"]),
              "convert": (convert.main, ["missing.pt", "out.pt"]),
              "check": (check.main, ["no-such-dataset"]),
              "download": (download.main, ["yolov99z"])}, capsys)


def test_help_has_no_markup(capsys):
    for main in (eval_cli.main, train_cli.main, inspect.main, predict.main, check.main, convert.main, download.main):
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        assert "``" not in out and "usage:" in out


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "yolofreeze.inspect", "yolov8n"],
    [sys.executable, "-m", "yolofreeze.check", "coco8"],
])
def test_output_piped_into_head_ends_quietly(command, shared_data):
    """``… | head``: the reader leaves before the output is written; no traceback, no error line."""
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT)
    producer.stdout.close()  # the reader is gone before the first write: every write meets a closed pipe
    err = producer.stderr.read().decode()
    code = producer.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err.lower(), err
    assert code == 141


def test_unexpected_bug_still_shows_its_traceback(monkeypatch, capsys):
    """Only bad input is turned into one line: a programming error keeps its traceback."""
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(inspect, "format_block_table", broken)
    with pytest.raises(ZeroDivisionError):
        inspect.main(["yolov8n"])
