"""The command line's start-up: light imports, and the shared --threads option."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ramir.cli import build_parser
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
        "import ramir.evaluation.runner  # imports the sub-module ramir.restore\n"
        "print(callable(ramir.restore), ramir.restore.__module__, ramir.load_model.__name__)\n"
    )
    assert _python(code).split() == ["True", "ramir.restore", "load_model"]


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


def test_lower_packages_do_not_import_training():
    """Dependencies flow one way: attribution, evaluation, data and models never load
    the training package (run folders are read through ramir.checkpoint)."""
    code = (
        "import sys\n"
        "import ramir.attribution.analysis, ramir.evaluation.runner, ramir.checkpoint\n"
        "print('ramir.training' in sys.modules)\n"
    )
    assert _python(code).strip() == "False"


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
