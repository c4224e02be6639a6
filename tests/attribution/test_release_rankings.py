"""The release's rankings, exactly: importing a release MAC folder selects its first k lines.

Uses the release's own files (tests/attribution/data/mac_analysis_result, see its
README): filter_cond.txt and filter_index.txt as released, filter_name.txt rebuilt from
ramir's layer list and checked byte for byte against the release's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from ramir.attribution import LayerScores, load_mac, plot_mac, select_layers
from ramir.attribution.official import import_official_mac, read_official_mac
from ramir.attribution.selection import list_layers
from ramir.cli import main
from ramir.errors import UnknownNameError
from ramir.models import build_model

DATA = Path(__file__).parent / "data" / "mac_analysis_result"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "paper"
SHA256 = {
    "ram_swinir_mac": "1227d71e888080543cfb656499f23f3490244aad11833a70414468dd83ca5395",
    "ram_promptir_mac": "38360cdc96bba89da4e917f7962ab4c9386f4c2c41530f2e1894e0d2833bdac2",
    "3task_mac": "74104e84b42d660548e57889787391106bde8353f78b28b39697c9dc5ca53c2a",
    "filter_name_RFR.txt": "a4d2c11b1ae2c58b5f11bdb21ad4e2722f9c1a382e0ee02c28e51341f35d4881",
}
ARCH = {"ram_swinir_mac": "ram_swinir", "ram_promptir_mac": "ram_promptir"}


def _layers(arch: str) -> list[str]:
    with torch.device("meta"):
        return list_layers(build_model(arch))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split()


def _filter_name(folder: Path, arch: str) -> str:
    """The release's filter_name.txt: line i names the layer at filter_index.txt[i]."""
    layers = _layers(arch)
    return "".join(f"{layers[int(i)]}\n" for i in _lines(folder / "filter_index.txt"))


def _release_folder(tmp_path: Path, name: str) -> Path:
    """A release MAC folder as the release ships it (filter_name/cond/index.txt)."""
    folder = tmp_path / name
    shutil.copytree(DATA / name, folder)
    (folder / "filter_name.txt").write_text(_filter_name(DATA / name, ARCH[name]), "utf-8")
    return folder


def _rfr_list() -> str:
    """RAM++'s filter_name_RFR.txt (3task_mac = 5task_mac): 33 RFR modules, then the
    Restormer layers of 3task_mac/filter_name.txt."""
    head = (DATA / "ram_plus" / "rfr_modules.txt").read_text("utf-8")
    return head + _filter_name(DATA / "ram_plus" / "3task_mac", "restormer")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_rebuilt_release_files_are_the_release_s_bytes():
    for name, arch in ARCH.items():
        assert _sha256(_filter_name(DATA / name, arch)) == SHA256[name]
    ram_plus = _filter_name(DATA / "ram_plus" / "3task_mac", "restormer")
    assert _sha256(ram_plus) == SHA256["3task_mac"]
    assert _sha256(_rfr_list()) == SHA256["filter_name_RFR.txt"]


@pytest.mark.parametrize(
    ("name", "ratio", "k", "layer_in", "layer_out", "moved"),
    [
        ("ram_swinir_mac", 0.1, 26, "layers.1.residual_group.blocks.3.attn.proj",
         "layers.1.residual_group.blocks.3.attn", 32),
        ("ram_promptir_mac", 0.3, 133, "decoder_level2.4.attn.project_out",
         "decoder_level2.4.attn", 46),
    ],
)  # fmt: skip
def test_an_import_selects_exactly_the_release_s_first_k_lines(
    tmp_path, name, ratio, k, layer_in, layer_out, moved
):
    folder = _release_folder(tmp_path, name)
    names = _lines(folder / "filter_name.txt")
    mac_json, _ = import_official_mac(folder, tmp_path / "out", arch=ARCH[name])
    mac = load_mac(mac_json)
    assert mac.ranking() == names  # the whole ranking, in filter_name.txt's order
    assert mac.rank == {n: i for i, n in enumerate(names)} and mac.scored
    # every k, from 1 to all of them
    n = len(names)
    for j in range(1, n + 1):
        assert select_layers(mac.scores, j / n) == names[:j], j
    chosen = select_layers(mac.scores, ratio)
    assert chosen == names[:k] and layer_in in chosen and layer_out not in chosen
    # The data has the ties the issue is about: re-sorting the 6-decimal scores (the old
    # import) moves `moved` layers and swaps the two named at the cut.
    by_score = sorted(mac.scores, key=lambda n: -mac.scores[n])
    assert sum(a != b for a, b in zip(by_score, names, strict=True)) == moved
    assert layer_out in by_score[:k] and layer_in not in by_score[:k]
    # the file: ranked_by rank, entries in rank order with the release's line as rank
    doc = json.loads(mac_json.read_text())
    assert doc["ranked_by"] == "rank" and doc["method"] == "mac"
    assert [(e["rank"], e["layer"]) for e in doc["layers"]] == list(enumerate(names))
    layers = _layers(ARCH[name])
    assert [e["index"] for e in doc["layers"]] == [layers.index(x) for x in names]


@pytest.mark.parametrize(("name", "ratio", "k"), [("ram_swinir_mac", 0.1, 26),
                                                  ("ram_promptir_mac", 0.3, 133)])  # fmt: skip
def test_finetune_with_the_paper_config_trains_the_release_s_layers(tmp_path, name, ratio, k):
    from ramir.training.config import FinetuneConfig, load_training_config
    from ramir.training.finetune import selected_layers

    folder = _release_folder(tmp_path, name)
    mac_json, _ = import_official_mac(folder, tmp_path / "out", arch=ARCH[name])
    cfg = load_training_config(
        CONFIGS / f"{ARCH[name]}_finetune.yaml",
        [f"select.mac={mac_json}", "model.init=null"],
        schema=FinetuneConfig,
    )
    assert cfg.select.ratio == ratio
    assert selected_layers(cfg) == _lines(folder / "filter_name.txt")[:k]


def test_the_selected_count_is_the_release_s_int_of_ratio_times_n():
    """The release takes int(n * ratio) lines; ramir floor(n * ratio + 1e-9). For the
    release's sizes they agree at every ratio of up to 3 decimals."""
    for n in (263, 445, 406, 439):
        scores = LayerScores({f"l{i}": 0.0 for i in range(n)}, rank={f"l{i}": i for i in range(n)})
        for m in range(1001):
            ratio = m / 1000
            assert len(select_layers(scores, ratio)) == int(n * ratio), (n, ratio)


def _rfr_folder(tmp_path: Path) -> Path:
    """RAM++'s 5task_mac: only filter_name_RFR.txt."""
    folder = tmp_path / "ram_plus" / "5task_mac"
    folder.mkdir(parents=True)
    (folder / "filter_name_RFR.txt").write_text(_rfr_list(), "utf-8")
    return folder


def test_a_ram_plus_list_without_scores_imports_as_a_ranked_list(tmp_path, capsys):
    folder = _rfr_folder(tmp_path)
    names = _lines(folder / "filter_name_RFR.txt")
    assert len(names) == 439 and names[0] == "dr_fusion1.reduce_chan"
    out = tmp_path / "imported"
    assert main(["analyze", "--import", str(folder), "--out", str(out)]) == 0
    assert "imported 439 layers from 5task_mac; in the release's order (no scores)" in (
        capsys.readouterr().out
    )
    doc = json.loads((out / "mac.json").read_text())
    assert doc["ranked_by"] == "rank" and doc["method"] == "ranked list"
    assert doc["parameters"]["scores"].startswith("none: the release gives only")
    assert "filter_name_RFR.txt" in doc["parameters"]["imported_from"]
    assert [e["layer"] for e in doc["layers"]] == names
    assert all(e["score"] is None and e["index"] is None for e in doc["layers"])
    assert [e["rank"] for e in doc["layers"]] == list(range(439))
    assert (out / "mac.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mac = load_mac(out / "mac.json")
    assert not mac.scored and mac.ranking() == names
    with pytest.raises(ValueError, match="no scores to plot"):
        plot_mac(mac.scores, tmp_path / "x.png")
    # the release's RAM++ ratios: 1.0 (all) and 0.358 (157 of 439)
    for ratio in (1.0, 0.358, 0.3, 0.1):
        assert select_layers(mac.scores, ratio) == names[: int(len(names) * ratio)]
    for j in range(1, len(names) + 1):
        assert select_layers(mac.scores, j / len(names)) == names[:j]


def test_ramir_finetune_selects_the_first_k_names_of_a_ram_plus_list(tmp_path):
    from ramir.training.config import FinetuneConfig, load_training_config
    from ramir.training.finetune import selected_layers

    folder = _rfr_folder(tmp_path)
    names = _lines(folder / "filter_name_RFR.txt")
    mac_json, _ = import_official_mac(folder, tmp_path / "out")
    cfg = load_training_config(
        CONFIGS / "ram_promptir_finetune.yaml",
        [f"select.mac={mac_json}", "model.init=null", "select.ratio=0.358"],
        schema=FinetuneConfig,
    )
    assert selected_layers(cfg) == names[:157]
    by_params = load_training_config(
        CONFIGS / "ram_promptir_finetune.yaml",
        [f"select.mac={mac_json}", "model.init=null", "select.by=params"],
        schema=FinetuneConfig,
    )
    with pytest.raises(ValueError, match="no parameter counts"):
        selected_layers(by_params)  # a list without parameter counts


def test_a_list_file_itself_imports_and_a_folder_with_both_says_so(tmp_path, caplog):
    """3task_mac/7task_mac hold the scored filter_name.txt (Restormer layers) and the
    RFR list: the folder imports the scored analysis and says how to take the list; the
    list file imports the list."""
    folder = tmp_path / "3task_mac"
    shutil.copytree(DATA / "ram_plus" / "3task_mac", folder)
    restormer = _filter_name(DATA / "ram_plus" / "3task_mac", "restormer")
    (folder / "filter_name.txt").write_text(restormer, "utf-8")
    n = len(restormer.split())
    (folder / "filter_mac.txt").write_text("".join(f"{9.0 - i // 2:.6f}\n" for i in range(n)))
    (folder / "filter_name_RFR.txt").write_text(_rfr_list(), "utf-8")
    with caplog.at_level("WARNING"):
        mac_json, _ = import_official_mac(folder, tmp_path / "scored", arch="restormer")
    assert "also holds filter_name_RFR.txt" in caplog.text
    mac = load_mac(mac_json)
    assert mac.scored and mac.ranking() == restormer.split()  # pairs of equal scores
    assert mac.model["arch"] == "restormer" and "filter_name_RFR.txt" in mac.parameters["note"]
    listed = load_mac(import_official_mac(folder / "filter_name_RFR.txt", tmp_path / "rfr")[0])
    assert not listed.scored and listed.ranking() == _rfr_list().split()


def test_a_list_file_given_to_the_cli_writes_to_runs_of_its_folder(tmp_path, monkeypatch):
    folder = _rfr_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "--import", str(folder / "filter_name_RFR.txt")]) == 0
    assert (tmp_path / "runs" / "5task_mac" / "mac.json").is_file()


def test_arch_checks_say_that_ram_plus_networks_are_not_in_ramir(tmp_path, capsys):
    folder = _rfr_folder(tmp_path)
    with pytest.raises(ValueError, match=r"33 layer\(s\) of 5task_mac .*RestormerRFR"):
        import_official_mac(folder, tmp_path / "a", arch="restormer")
    from ramir.models import list_models

    # the message says RAM++'s network is missing while no model of ramir is an RFR one
    missing = "not in ramir yet" if not any("rfr" in m for m in list_models()) else "RFR is"
    with pytest.raises(UnknownNameError, match=f"unknown model 'ram_plus_rfr'.*{missing}"):
        import_official_mac(folder, tmp_path / "b", arch="ram_plus_rfr")
    out = tmp_path / "c"
    assert main(["analyze", "--import", str(folder), "--arch", "ram_plus", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ramir analyze: error: cannot check the layer names of 5task_mac")
    assert missing in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "a").exists()


def test_a_folder_without_release_files_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no filter_name.txt .nor filter_name_RFR"):
        read_official_mac(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        read_official_mac(tmp_path / "missing")
    bad = tmp_path / "list.txt"
    bad.write_text("conv_first\nconv_last extra\n")
    with pytest.raises(ValueError, match="line 2: more than one name"):
        read_official_mac(bad)
    random_only = tmp_path / "random"  # the release's random_analysis.py: names only
    random_only.mkdir()
    (random_only / "filter_name.txt").write_text("b\na\n")
    mac = read_official_mac(random_only)
    assert mac.ranking == ["b", "a"] and mac.scores is None and not mac.scored
    assert math.isnan(load_mac(import_official_mac(random_only, tmp_path / "o")[0]).scores["a"])
