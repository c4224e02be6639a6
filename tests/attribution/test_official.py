"""Importing the official release's MAC rankings (filter_name/cond/index.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramir.attribution import load_mac
from ramir.attribution.official import import_official_mac, read_official_mac
from ramir.cli import main

# Four RAM-SwinIR layers in the release's format: highest score first, with each layer's
# position in the network (the release's files list all 263).
NAMES = ["conv_last", "patch_embed.norm", "conv_first", "layers.0.conv"]
SCORES = ["83.939728", "12.391508", "10.187642", "6.518885"]
INDEX = ["3", "1", "0", "2"]


def _release_folder(root: Path, names=NAMES, scores=SCORES, index=INDEX) -> Path:
    folder = root / "ram_swinir_mac"
    folder.mkdir()
    for name, lines in (("filter_name", names), ("filter_cond", scores), ("filter_index", index)):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_release_files_become_a_mac_json_in_depth_order(tmp_path):
    folder = _release_folder(tmp_path)
    mac = read_official_mac(folder)
    assert list(mac.scores) == ["conv_first", "patch_embed.norm", "layers.0.conv", "conv_last"]
    mac_json, plot = import_official_mac(folder, tmp_path / "out", arch="ram_swinir")
    loaded = load_mac(mac_json)
    assert loaded.ranking() == NAMES  # the release's order, highest first
    assert loaded.scores["conv_last"] == pytest.approx(83.939728)
    assert plot.stat().st_size > 0


def test_cli_import(tmp_path, capsys):
    folder = _release_folder(tmp_path)
    out = tmp_path / "imported"
    assert main(["analyze", "--import", str(folder), "--out", str(out)]) == 0
    assert "imported 4 layers" in capsys.readouterr().out
    assert load_mac(out / "mac.json").ranking()[0] == "conv_last"


def test_a_failed_import_writes_nothing(tmp_path, capsys):
    folder = _release_folder(tmp_path)
    out = tmp_path / "imported"
    (out / "mac.png").mkdir(parents=True)  # the last step (the plot's place) fails
    (out / "mac.json").write_text("earlier run\n")
    assert main(["analyze", "--import", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ramir analyze: error: ") and len(err.strip().splitlines()) == 1
    assert (out / "mac.json").read_text() == "earlier run\n"  # not half replaced
    assert sorted(p.name for p in out.iterdir()) == ["mac.json", "mac.png"]  # no temp files
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="not layers of 'nafnet'"):
        import_official_mac(folder, fresh, arch="nafnet")
    assert not fresh.exists()
    (out / "mac.png").rmdir()
    assert main(["analyze", "--import", str(folder), "--out", str(out)]) == 0
    assert load_mac(out / "mac.json").ranking() == NAMES and (out / "mac.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["mac.json", "mac.png"]


def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    folder = _release_folder(tmp_path)
    (folder / "filter_cond.txt").write_bytes("83.9\n12.3\n10.1\n6.5\n".encode("utf-16"))
    out = tmp_path / "imported"
    assert main(["analyze", "--import", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ramir analyze: error: {folder / 'filter_cond.txt'}: not UTF-8 text (byte 0xff at "
        "offset 0); the release's files are plain text, one entry per line"
    )
    assert not out.exists()
    # a byte-order mark (Windows editors) is not part of the first layer's name
    (folder / "filter_cond.txt").write_text("\n".join(SCORES), encoding="utf-8")
    (folder / "filter_name.txt").write_text("\n".join(NAMES), encoding="utf-8-sig")
    assert list(read_official_mac(folder).scores)[0] == "conv_first"


@pytest.mark.parametrize(
    ("names", "scores", "index", "message"),
    [
        (NAMES, SCORES[:3], INDEX, "lists 4 layers but filter_cond.txt 3 scores"),
        (NAMES, [*SCORES[:3], "nan"], INDEX, "score is not finite"),
        (NAMES, SCORES, ["0", "1", "1", "2"], "must hold each position 0..3 once"),
        (["conv_last", "conv_last", "conv_first", "x"], SCORES, INDEX, "names a layer twice"),
    ],
)
def test_bad_release_files_are_named(tmp_path, names, scores, index, message):
    with pytest.raises(ValueError, match=message):
        read_official_mac(_release_folder(tmp_path, names, scores, index))


def test_a_ranking_of_another_network_is_refused(tmp_path):
    folder = _release_folder(tmp_path)
    with pytest.raises(ValueError, match="4 layer.s. of ram_swinir_mac .* not layers of 'nafnet'"):
        import_official_mac(folder, tmp_path / "out", arch="nafnet")


@pytest.mark.parametrize(("arch", "expected"), [("ram_swinir", 26), ("ram_promptir", 133)])
def test_finetuning_with_an_imported_full_ranking_selects_the_release_count(
    tmp_path, arch, expected
):
    """A whole release-format ranking (every layer of the paper-size network), imported,
    then read by the paper's fine-tuning config: 26 layers at 10% (RAM-SwinIR), 133 at 30%
    (RAM-PromptIR), the release's rounding down, highest scores first."""
    import torch

    from ramir.attribution.selection import list_layers
    from ramir.models import build_model
    from ramir.training.config import FinetuneConfig, load_training_config
    from ramir.training.finetune import selected_layers

    with torch.device("meta"):
        layers = list_layers(build_model(arch))
    rng = torch.Generator().manual_seed(0)
    scores = torch.rand(len(layers), generator=rng).tolist()
    ranked = sorted(range(len(layers)), key=lambda i: -scores[i])
    folder = _release_folder(
        tmp_path,
        [layers[i] for i in ranked],
        [f"{scores[i]:.6f}" for i in ranked],
        [str(i) for i in ranked],
    )
    mac_json, _ = import_official_mac(folder, tmp_path / "analyze", arch=arch)
    configs = Path(__file__).resolve().parents[2] / "configs" / "paper"
    cfg = load_training_config(configs / f"{arch}_finetune.yaml",
                               [f"select.mac={mac_json}", "model.init=null"],
                               schema=FinetuneConfig)  # fmt: skip
    chosen = selected_layers(cfg)
    assert chosen == [layers[i] for i in ranked[:expected]]
