"""The command line: light imports at start-up, one vocabulary of shared options (and the
old spellings, deprecated), and which errors print one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ramir.cli import build_parser
from ramir.errors import UsageError
from ramir.runtime import auto_threads, parse_threads


def _python(code: str) -> str:
    """Standard output of ``code`` run in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_help_and_version_do_not_import_the_library():
    """Building and parsing every command line loads no PyTorch, NumPy, SciPy or PIL."""
    argvs = [
        ["restore", "x.png"],
        ["demo"],
        ["data", "photos", "d"],
        ["serve"],
        ["export", "m.safetensors", "-o", "m.onnx"],
        ["info"],
        ["pretrain", "-c", "c.yaml"],
        ["evaluate", "-c", "c.yaml"],
        ["models"],
    ]
    code = (
        "import sys, ramir.cli\n"
        "p = ramir.cli.build_parser()\n"
        f"for argv in {argvs!r}:\n"
        "    p.parse_args(argv)\n"
        "heavy = ('torch', 'numpy', 'scipy', 'skimage', 'PIL', 'yaml', 'safetensors')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert _python(code).strip() == "[]"


def test_package_attributes_load_on_first_use():
    code = (
        "import sys, ramir\n"
        "assert 'torch' not in sys.modules\n"
        "import ramir.inference.restore, ramir.evaluation.runner\n"
        "print(callable(ramir.restore), ramir.restore.__module__, ramir.load_model.__name__)\n"
    )
    assert _python(code).split() == ["True", "ramir.inference.restore", "load_model"]


@pytest.mark.parametrize(
    ("cpus", "load", "expected"), [(2, 0.1, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.5, 1), (8, 2.2, 6)]
)
def test_auto_threads_uses_the_cpus_not_busy(cpus, load, expected):
    assert auto_threads(cpus, load) == expected


def test_threads_option_is_shared_and_checked(capsys):
    parser = build_parser()
    for argv in (
        ["restore", "x.png", "--threads", "1"],
        ["demo", "--threads", "1"],
        ["pretrain", "-c", "c.yaml", "--threads", "1"],
        ["evaluate", "-c", "c.yaml", "--threads", "1"],
        ["serve", "--threads", "1"],
    ):
        assert parser.parse_args(argv).threads == 1
    assert parser.parse_args(["restore", "x.png"]).threads == "auto"
    assert parse_threads("auto") == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "x.png", "--threads", "0"])
    assert "threads must be >= 1 (or 'auto'), got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive integer or 'auto', got 'many'"):
        parse_threads("many")


def test_threads_above_the_cpu_count_are_refused(monkeypatch, capsys):
    import ramir.runtime

    monkeypatch.setattr(ramir.runtime, "available_cpus", lambda: 4)
    monkeypatch.setattr(ramir.runtime.os, "cpu_count", lambda: 4)
    assert parse_threads("4") == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["restore", "x.png", "--threads", "9999"])
    assert (
        "argument --threads: threads must be at most 4 (this machine has 4 CPU(s)), got 9999; "
        "more threads than CPUs only slow the job down: use 'auto' or a number from 1 to 4"
    ) in capsys.readouterr().err
    for bad in ("0", "-3"):
        with pytest.raises(UsageError, match=f"threads must be >= 1 \\(or 'auto'\\), got {bad}"):
            parse_threads(bad)
    monkeypatch.setattr(ramir.runtime.os, "cpu_count", lambda: 64)  # an affinity mask
    with pytest.raises(UsageError, match="this process may use 4 of this machine's 64 CPUs"):
        ramir.runtime.set_threads(5)  # the library path (ramir analyze's threads: key)


def test_one_device_resolver():
    import torch

    from ramir.runtime import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU is available; use --device cpu"):
            resolve_device("cuda:1")


# The layering of src/ramir (what may import what): tests/test_import_graph.py.


def test_busy_cpus_sees_a_busy_process():
    """`--threads auto` measures the CPUs in use now (not the 1-minute load average,
    which remembers work that has just finished)."""
    import subprocess as sp

    from ramir.runtime import busy_cpus

    idle = busy_cpus()
    if idle is None:
        pytest.skip("no /proc/stat on this system")
    spin = sp.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = busy_cpus(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and busy >= 0.6  # one spinning process ~ one CPU


# --------------------------------------------------------------- one vocabulary (issue 16)

MODEL_COMMANDS = [  # commands that run a model without a config: --device defaults to auto
    ["restore", "x.png"],
    ["serve"],
    ["dualmask", "x.png", "--model", "m.safetensors", "-o", "d"],
]
CONFIG_COMMANDS = [  # the config holds the device (auto unless it says otherwise)
    ["demo"],
    ["pretrain", "-c", "c.yaml"],
    ["train", "-c", "c.yaml"],
    ["finetune", "-c", "c.yaml"],
    ["analyze", "-c", "c.yaml"],
    ["evaluate", "-c", "c.yaml"],
]


def test_every_command_speaks_the_same_options():
    parser = build_parser()
    for argv in MODEL_COMMANDS:
        args = parser.parse_args(argv)
        assert args.device == "auto", argv
        assert parser.parse_args([*argv, "--device", "cpu", "-q"]).device == "cpu"
    for argv in CONFIG_COMMANDS:
        assert parser.parse_args(argv).device is None, argv
        args = parser.parse_args([*argv, "--device", "cuda:1", "-o", "out", "-q"])
        assert (args.device, str(args.out), args.quiet) == ("cuda:1", "out", True), argv
        assert parser.parse_args([*argv, "--set", "a=1", "b=2"]).overrides == ["a=1", "b=2"]
    for argv in (
        ["restore", "x.png", "-o", "o"],
        ["export", "-o", "o"],
        ["data", "photos", "-o", "o"],
        ["dualmask", "x.png", "--model", "m", "--out", "o"],
    ):
        assert str(parser.parse_args(argv).out) == "o", argv
    for argv in (["restore", "x.png"], ["serve"], ["info"], ["export", "-o", "m.onnx"]):
        assert parser.parse_args(argv).model is None  # None = the model shipped with ramir
        assert str(parser.parse_args([*argv, "--model", "m.pth"]).model) == "m.pth"
    for argv in (["demo"], ["serve"], ["data", "corpus"], ["export", "-o", "m.onnx"]):
        assert parser.parse_args([*argv, "-q"]).quiet is True, argv
    for argv in (["restore", "x.png"], ["serve"], ["export", "-o", "m.onnx"]):  # RAM++'s DINOv2
        assert parser.parse_args(argv).dino is None, argv
        assert str(parser.parse_args([*argv, "--dino", "dinov2-giant"]).dino) == "dinov2-giant"
    assert str(parser.parse_args(["data", "check", "-c", "d.yaml"]).config) == "d.yaml"


def test_old_spellings_work_for_one_release_with_a_note(capsys):
    parser = build_parser()
    args = parser.parse_args(["export", "m.safetensors", "--output", "m.onnx"])
    assert (str(args.model), str(args.out)) == ("m.safetensors", "m.onnx")
    assert not hasattr(args, "legacy_model")
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == [
        "ramir export: warning: --output is deprecated and will be removed in the next "
        "release; use -o/--out",
        "ramir export: warning: the positional CHECKPOINT is deprecated and will be removed "
        "in the next release; use --model CHECKPOINT",
    ]
    assert str(parser.parse_args(["restore", "x.png", "--output", "o"]).out) == "o"
    assert str(parser.parse_args(["data", "photos", "dest"]).out) == "dest"
    assert str(parser.parse_args(["data", "check", "d.yaml"]).config) == "d.yaml"
    assert parser.parse_args(["data", "corpus", "--no-progress"]).quiet is True
    assert str(parser.parse_args(["info", "default"]).model) == "default"
    assert capsys.readouterr().err.count("deprecated") == 5
    # the new spellings print nothing
    parser.parse_args(["export", "--model", "m.safetensors", "-o", "m.onnx"])
    assert capsys.readouterr().err == ""


def test_an_option_given_twice_or_missing_is_a_usage_error(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["export", "a.pth", "--model", "b.pth", "-o", "m.onnx"])
    assert e.value.code == 2
    assert "--model is given twice" in capsys.readouterr().err
    for argv in (["export"], ["data", "photos"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "the following arguments are required: -o/--out" in capsys.readouterr().err


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from ramir.cli import main
    from ramir.commands import models
    from ramir.errors import RamirError, UnknownNameError

    def fail(exc: BaseException):
        def run(args):
            raise exc

        return run

    for exc, text in (
        (RamirError("bad input"), "bad input"),
        (
            UnknownNameError("unknown model 'x'; choose one of: a"),
            "unknown model 'x'; choose one of: a",
        ),
        (ValueError("tile must be >= 1"), "tile must be >= 1"),
        (FileNotFoundError("image file not found: a.png"), "image file not found: a.png"),
    ):
        monkeypatch.setattr(models, "run", fail(exc))
        assert main(["models"]) == 1
        assert capsys.readouterr().err == f"ramir models: error: {text}\n"
    for bug in (TypeError("bug"), KeyError("bug"), AttributeError("bug"), RuntimeError("bug")):
        monkeypatch.setattr(models, "run", fail(bug))
        with pytest.raises(type(bug)):
            main(["models"])
    monkeypatch.setattr(models, "run", fail(RamirError("bad input")))
    with pytest.raises(RamirError):  # -v: the traceback of a user error too
        main(["-v", "models"])


def test_project_errors_share_one_base_and_keep_their_old_one():
    from ramir.checkpoint import CheckpointError
    from ramir.config import ConfigError
    from ramir.corpus.manifest import CorpusError
    from ramir.data.read import ImageTooLargeError
    from ramir.errors import RamirError, ResourceError
    from ramir.registry import Registry, UnknownArgumentError
    from ramir.training.checkpoint import RunExistsError

    for cls, old in (
        (CheckpointError, ValueError),
        (ConfigError, ValueError),
        (ImageTooLargeError, ValueError),
        (RunExistsError, ValueError),
        (CorpusError, RuntimeError),
        (ResourceError, RuntimeError),
        (UnknownArgumentError, TypeError),
    ):
        assert issubclass(cls, RamirError) and issubclass(cls, old), cls
    with pytest.raises(KeyError) as e:
        Registry[int]("widget").get("x")
    assert isinstance(e.value, RamirError) and str(e.value).startswith("unknown widget 'x'")


def test_device_goes_through_the_one_resolver(capsys):
    import torch

    from ramir.cli import main

    assert main(["restore", "x.png", "--device", "gpu0"]) == 1
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["serve", "--device", "cuda"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("ramir serve: error: device 'cuda' was requested but no CUDA")


def test_finetune_says_which_layers_it_trains():
    from ramir.commands.finetune import describe_selection
    from ramir.training.config import FinetuneConfig

    cfg = FinetuneConfig()
    assert describe_selection(cfg) == "every layer"
    cfg.select.layers = ["a", "b"]
    assert describe_selection(cfg) == "2 layer(s)"
    cfg.select.layers, cfg.select.mac = [], "runs/x/mac.json"
    assert describe_selection(cfg) == "the top-ranked 0.1 of the layers in runs/x/mac.json"


def test_quiet_keeps_only_warnings_in_the_log(monkeypatch):
    import logging

    from ramir.cli import main
    from ramir.commands import data

    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    monkeypatch.setattr(data, "run_corpus", lambda args: 0)
    for argv in (["data", "corpus"], ["data", "corpus", "-q"], ["-v", "data", "corpus", "-q"]):
        assert main(argv) == 0
    assert levels == [logging.INFO, logging.WARNING, logging.DEBUG]
