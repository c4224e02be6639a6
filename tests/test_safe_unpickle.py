"""No code runs from a pickled checkpoint: payloads in every pickle of the zip and the
legacy format, through the library and through every command that takes a model."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import ramir
from ramir.checkpoint import CheckpointError, read_state_dict, safe_unpickle
from ramir.cli import main
from ramir.models import build_model

REPO = Path(__file__).resolve().parents[1]


class _Call:
    """Pickles as the call ``func(*args)``: what a malicious file runs when unpickled."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _code_payload(marker: Path) -> _Call:
    """A call of ``os.system``: a module that runs code, so the file is refused."""
    return _Call(os.system, f"touch {marker}")


def _quiet_payload(marker: Path) -> _Call:
    """A call of an innocent-looking class that writes a file when called
    (``zipfile.ZipFile(marker, 'w')``): not refused by name, so it must be dropped."""
    return _Call(zipfile.ZipFile, str(marker), "w")


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("nafnet_tiny", normalization="none").state_dict()


def _injecting_module(slot: int, payload: object) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.save`` that writes ``payload`` instead of the
    ``slot``-th top-level pickle of the legacy format (0 magic number, 1 protocol,
    2 system information, 3 storage keys; the object pickle goes through ``Pickler``)."""
    calls = {"n": 0}

    def dump(obj, f, protocol=2):
        index = calls["n"]
        calls["n"] += 1
        pickle.dump(payload if index == slot else obj, f, protocol=protocol)

    module = types.ModuleType("injector")
    module.dump = dump
    module.Pickler = pickle.Pickler
    return module


LEGACY_SLOTS = {"magic number": 0, "protocol": 1, "system info": 2, "storage keys": 3}


def write_with_payload(path: Path, where: str, payload: object) -> Path:
    """A BasicSR-style ``{'params': ...}`` file with ``payload`` in one of its pickles:
    ``zip`` (inside the object of the zip format), ``legacy object`` (inside the object of
    the legacy format), a legacy top-level pickle (``LEGACY_SLOTS``) or ``protocol 0``
    (the whole file one protocol-0 pickle)."""
    obj = {"params": _weights(), "extra": payload}
    if where == "zip":
        torch.save(obj, path)
    elif where == "legacy object":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif where == "protocol 0":
        path.write_bytes(pickle.dumps(payload, protocol=0))
    else:
        module = _injecting_module(LEGACY_SLOTS[where], payload)
        torch.save({"params": _weights()}, path, pickle_module=module,
                   _use_new_zipfile_serialization=False)  # fmt: skip
    return path


WHERE = ["zip", "legacy object", *LEGACY_SLOTS, "protocol 0"]


@pytest.mark.parametrize("where", WHERE)
def test_a_code_payload_in_any_pickle_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "ran"
    path = write_with_payload(tmp_path / "bad.pth", where, _code_payload(marker))
    with pytest.raises(CheckpointError, match="can run code") as info:
        ramir.load_model(path)
    assert "os.system" in str(info.value) or "posix.system" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("where", WHERE)
def test_a_quiet_payload_in_any_pickle_is_dropped_and_never_runs(tmp_path, where):
    """A name outside the code modules becomes an inert placeholder: where it sat in the
    object (or in the system information, which PyTorch does not read) the weights still
    load; where it replaced another pickle of the format the file is corrupt."""
    marker = tmp_path / "ran"
    path = write_with_payload(tmp_path / "bad.pth", where, _quiet_payload(marker))
    if where in ("zip", "legacy object", "system info"):
        model = ramir.load_model(path)
        assert model.arch_name == "nafnet"
        sd = read_state_dict(path)
        assert all(torch.equal(sd[k], v) for k, v in _weights().items())
    else:
        with pytest.raises(CheckpointError):
            ramir.load_model(path)
    assert not marker.exists()


def test_the_legacy_format_loads_like_the_zip_format(tmp_path):
    """Legacy files without any object go through ``weights_only``; with a trainer's
    object (an ``argparse.Namespace``) through the safe unpickler: same tensors."""
    plain = tmp_path / "plain.pth"
    torch.save({"params": _weights()}, plain, _use_new_zipfile_serialization=False)
    with_obj = tmp_path / "obj.pth"
    torch.save({"params": _weights(), "opt": argparse.Namespace(lr=1e-4)}, with_obj,
               _use_new_zipfile_serialization=False)  # fmt: skip
    for path in (plain, with_obj):
        sd = read_state_dict(path)
        assert sd.keys() == _weights().keys()
        assert all(torch.equal(sd[k], v) for k, v in _weights().items())


def _restricted_loads(data: bytes):
    return safe_unpickle.loads(data)


def test_plain_values_and_containers_round_trip():
    value = {
        "a": [1, -2, 3.5, 2**70, -(2**40), None, True, False, "é", b"\x00\xff"],
        ("t", 1): {"set": {1, 2}, "frozen": frozenset({3})},
        "od": __import__("collections").OrderedDict(x=1),
        "shared": [[0]] * 2,
    }
    for protocol in (2, 3, 4, 5):
        assert _restricted_loads(pickle.dumps(value, protocol=protocol)) == value


def test_tensors_round_trip_through_torch_load():
    t = torch.arange(12.0).reshape(3, 4)
    buf = io.BytesIO()
    torch.save({"w": t, "p": torch.nn.Parameter(t.clone())}, buf)
    buf.seek(0)
    module = safe_unpickle.pickle_module()
    obj = torch.load(buf, weights_only=False, pickle_module=module)
    assert torch.equal(obj["w"], t) and isinstance(obj["p"], torch.nn.Parameter)
    assert module.skipped == set()


@pytest.mark.parametrize(
    "name",
    ["builtins.eval", "builtins.exec", "builtins.getattr", "subprocess.Popen",
     "importlib.import_module", "os.path.join", "operator.attrgetter", "runpy.run_path"],
)  # fmt: skip
def test_code_modules_are_refused_by_name(name):
    module, attr = name.rsplit(".", 1)
    data = b"\x80\x02c" + f"{module}\n{attr}\n".encode() + b"X\x01\x00\x00\x00x\x85R."
    with pytest.raises(safe_unpickle.RefusedPickleError, match="can run code"):
        _restricted_loads(data)


def test_a_dropped_object_records_its_name_and_swallows_its_state():
    data = pickle.dumps({"ns": argparse.Namespace(lr=1.0, deep={"x": [1]})}, protocol=2)
    unpickler = safe_unpickle.Unpickler(io.BytesIO(data))
    obj = unpickler.load()
    assert isinstance(obj["ns"], safe_unpickle.Dropped)
    assert unpickler.skipped == {"argparse.Namespace"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"(ctorch\nSize\no.", "OBJ"),  # protocol 0/1 instance forms
        (b"(ios\nsystem\n.", "INST"),
        (b"S'x'\n.", "STRING"),
        (b"\x80\x02\x82\x01.", "EXT1"),  # copyreg extension codes
        (b"\x80\x02X\xff\xff\xff\x7f", "ends too early"),  # declared string past the end
        (b"\x80\x02c__main__\nX\n", "ends too early"),  # no STOP
        (b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85R.", "allocate"),
    ],
)
def test_instructions_checkpoints_do_not_need_are_refused(data, message):
    with pytest.raises(pickle.UnpicklingError, match=message):
        _restricted_loads(data)


def test_a_declared_allocation_through_an_allowed_call_is_refused():
    data = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x06\x00\x00\x00latin1\x86R."
    assert _restricted_loads(data) == b"x"  # an allowed call with small arguments runs
    big = b"\x80\x02ctorch.storage\nUntypedStorage\nJ\x00\x00\x00\x40\x85R."
    with pytest.raises(safe_unpickle.RefusedPickleError, match="allocate"):
        _restricted_loads(big)


# ----------------------------------------------------------------------------- commands


@pytest.fixture()
def bad_release(tmp_path):
    """A legacy-format release whose magic-number pickle calls ``os.system``."""
    marker = tmp_path / "ran"
    path = write_with_payload(tmp_path / "release.pth", "magic number", _code_payload(marker))
    return path, marker


def _photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    return path


def _evaluate_config(tmp_path: Path, checkpoint: Path) -> Path:
    clean = tmp_path / "clean"
    clean.mkdir()
    Image.open(_photo(tmp_path)).save(clean / "a.png")
    cfg = {
        "name": "t",
        "output_dir": str(tmp_path / "eval"),
        "models": [{"name": "m", "checkpoint": str(checkpoint)}],
        "data": {"test": [{"name": "n", "layout": "clean_folder", "root": str(clean),
                           "degradation": "gaussian_noise", "params": {"sigma": 25.0}}]},
        "device": "cpu",
    }  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


COMMANDS = ["info", "restore", "serve", "export", "dualmask", "evaluate", "finetune", "analyze"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_takes_a_model_refuses_the_file(tmp_path, bad_release, command,
                                                           capsys, monkeypatch):  # fmt: skip
    path, marker = bad_release
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    argv = {
        "info": ["info", "--model", str(path)],
        "restore": ["restore", str(_photo(tmp_path)), "--model", str(path), "-o", str(out)],
        "serve": ["serve", "--model", str(path), "--port", "0", "--device", "cpu"],
        "export": ["export", "--model", str(path), "-o", str(out / "m.onnx")],
        "dualmask": ["dualmask", str(_photo(tmp_path)), "--model", str(path), "-o", str(out)],
        "evaluate": ["evaluate", "-c", str(_evaluate_config(tmp_path, path))],
        "finetune": ["finetune", "-c", "configs/cpu/finetune.yaml", "-o", str(out), "--set",
                     f"model.init={path}", "select.mac=null", "train.total_iter=1"],
        "analyze": ["analyze", "-c", "configs/cpu/analyze.yaml", "-o", str(out), "--set",
                    f"checkpoint={path}", "images.count=1"],
    }[command]  # fmt: skip
    code = main([*argv, "--threads", "1"] if command not in ("info", "dualmask") else argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "refused checkpoint release.pth" in err and "can run code" in err
    assert "Traceback" not in err
    assert not marker.exists()
