"""The evaluation protocol: a fixed validation/test split of the evaluation photos.

The validation part chooses (recipes, checkpoints, classical settings); the test part is
only reported. These tests keep the split fixed: a change of the rule, of its salt or of
the evaluation photos fails here, and then the constant below must be updated on purpose.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from ramir.corpus.manifest import EVAL_PART_SALT, PARTS, Photo, eval_part, load_manifest
from ramir.data.datasets import layout_options, scan

REPO = Path(__file__).resolve().parent.parent

SPLIT_SHA256 = "aa2b742ea2cb36de3c2038d18547c9541570139cbb272188c5286ebfbfaaa599"
"""SHA-256 of the sorted ``id<TAB>part`` lines of the shipped evaluation photos. Update it
only when photos are added to (or removed from) the evaluation split: the rule itself
must never change (see test_the_rule_is_pinned)."""


def _split_digest(photos: list[Photo]) -> str:
    rows = sorted((p.id, eval_part(p.id)) for p in photos)
    return hashlib.sha256("\n".join(f"{i}\t{q}" for i, q in rows).encode()).hexdigest()


def test_the_rule_is_pinned():
    # the rule reads the id alone: these must never change
    assert EVAL_PART_SALT == "ramir-eval-part-v1"
    assert [eval_part(i) for i in ("a", "b", "c", "x1", "x2", "scratch-beach")] == [
        "val",
        "test",
        "val",
        "val",
        "test",
        "test",
    ]
    # about half and half on many ids
    n_val = sum(eval_part(f"photo-{i}") == "val" for i in range(2000))
    assert 900 < n_val < 1100


def test_the_split_of_the_shipped_evaluation_photos_is_fixed_disjoint_and_balanced():
    m = load_manifest()
    ev = m.split("eval")
    assert _split_digest(ev) == SPLIT_SHA256, (
        "the validation/test split of the evaluation photos changed; if photos were added "
        "on purpose, update SPLIT_SHA256 (the rule must never change)"
    )
    parts = m.parts()
    assert set(parts) == set(PARTS)
    val, test = ({p.id for p in parts[q]} for q in PARTS)
    assert val and test and not val & test
    assert val | test == {p.id for p in ev}
    assert not {p.sha256 for p in parts["val"]} & {p.sha256 for p in parts["test"]}
    assert abs(len(val) - len(test)) <= 0.25 * len(ev)
    # the training split has no parts
    with pytest.raises(ValueError, match="eval split only"):
        m.split("train", "val")
    with pytest.raises(ValueError, match="part must be one of val, test or all"):
        m.split("eval", "tst")
    assert m.split("eval", "all") == ev


def test_corpus_and_evaluation_set_are_disjoint_by_package_and_content():
    m = load_manifest()
    train, ev = m.split("train"), m.split("eval")
    assert not {p.package for p in train} & {p.package for p in ev}
    assert not {p.sha256 for p in train} & {p.sha256 for p in ev}
    assert not {m.packages[p.package].sha256 for p in train} & {
        m.packages[p.package].sha256 for p in ev
    }
    reserved = ("mate-backgrounds", "opencv-doc")
    assert not any(r in name for name in m.packages for r in reserved)


def test_the_photo_corpus_layout_reads_one_part(tiny_corpus):
    assert layout_options("photo_corpus")["part"] == "all"
    ids = {p.id for p in tiny_corpus.split("eval")}
    for view in ("eval", "eval_native"):
        every = scan("photo_corpus", ".", view=view)
        assert not every.problems and {q.key for q in every.pairs} == ids
        got = {}
        for part in PARTS:
            s = scan("photo_corpus", ".", view=view, part=part)
            assert not s.problems
            got[part] = {q.key for q in s.pairs}
            assert all(eval_part(k) == part for k in got[part])
        assert got["val"] | got["test"] == ids and not got["val"] & got["test"]
    s = scan("photo_corpus", ".", view="train", part="val")
    assert s.problems and "eval and eval_native views only" in s.problems[0]
    s = scan("photo_corpus", ".", view="eval", part="dev")
    assert s.problems and "part must be one of val, test or all" in s.problems[0]


@pytest.mark.parametrize("part", PARTS)
def test_part_configs_are_the_evaluation_recipe_restricted_to_the_part(part):
    full = yaml.safe_load((REPO / "configs" / "data" / "photos_eval.yaml").read_text())
    ours = yaml.safe_load((REPO / "configs" / "data" / f"photos_{part}.yaml").read_text())
    expected = [{**t, "options": {**t["options"], "part": part}} for t in full["test"]]
    assert ours["test"] == expected
    assert ours["seed"] == full["seed"]
    ev = yaml.safe_load((REPO / "configs" / "eval" / f"photos_{part}.yaml").read_text())
    assert ev["data_config"] == f"../data/photos_{part}.yaml"


def test_the_evaluation_set_holds_both_failure_modes_in_both_parts():
    # bright, low-contrast photos (taken for haze) and fine texture (taken for noise)
    m = load_manifest()
    for part, photos in m.parts().items():
        bright = [p.id for p in photos if "bright" in p.subject or "low contrast" in p.subject]
        texture = [p.id for p in photos if "texture" in p.subject or "fine detail" in p.subject]
        assert len(bright) >= 3, (part, bright)
        assert len(texture) >= 3, (part, texture)


# ----------------------------------------------------------------------------- recording


def test_a_part_is_measured_recorded_in_the_metadata_and_shown_by_info(
    tiny_corpus, tmp_path, capsys
):
    from ramir.checkpoint import load_model, read_metadata, save_model
    from ramir.cli import main
    from ramir.evaluation import protocol
    from ramir.models import build_model

    torch.manual_seed(0)
    weights = save_model(
        build_model("nafnet_tiny"), tmp_path / "m.safetensors", extra={"recipe": {"seed": 3}}
    )
    run = tmp_path / "run"
    record = protocol.measure_part(weights, part="test", progress=False, device="cpu", run_dir=run)
    assert (run / "photos_test" / "per_image").is_dir()  # kept: a stopped run resumes here
    again = protocol.measure_part(weights, part="test", progress=False, device="cpu", run_dir=run)
    assert again == record
    test_ids = [p.id for p in tiny_corpus.split("eval", "test")]
    assert record["part"] == "test" and record["photos"] == len(test_ids) == 1
    assert record["ids_sha256"] == protocol.part_digest("test", tiny_corpus)
    assert record["data_config"] == "photos_test.yaml"
    full = yaml.safe_load((REPO / "configs" / "data" / "photos_test.yaml").read_text())
    assert list(record["table"]) == [t["name"] for t in full["test"]]
    clean, noise = record["table"]["clean"], record["table"]["noise"]
    assert clean["mean_gain"] is None and math.isfinite(clean["median"])
    assert noise["n"] == 1 and noise["mean_gain"] == noise["worst_gain"]
    goals = {(g["column"], g["statistic"]): g for g in record["goals"]}
    assert goals[("noise", "gain")]["measured"] == noise["mean_gain"]
    assert goals[("clean", "worst")]["met"] == (clean["worst"] >= 35.0)
    # recorded: weights and the rest of the metadata unchanged
    out = protocol.record_part_scores(weights, record, tmp_path / "scored.safetensors")
    meta = read_metadata(out)
    assert meta["extra"]["recipe"] == {"seed": 3}
    assert meta["extra"]["photo_eval_test"] == json.loads(json.dumps(record))
    a, b = load_model(weights).state_dict(), load_model(out).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ramir info reports the test part
    assert main(["info", "--model", str(out)]) == 0
    text = capsys.readouterr().out
    assert "photo evaluation, test part (1 photos never trained on, only reported)" in text
    assert "goals (test part):" in text
    # a config that reads another part is refused
    with pytest.raises(ValueError, match="does not read the test part"):
        protocol.measure_part(
            weights, part="test", data_config=REPO / "configs" / "data" / "photos_val.yaml"
        )


def test_the_shipped_model_records_its_test_part_figures_on_the_current_split():
    """The shipped model's test-part record (written by ``python -m
    ramir.evaluation.protocol``) was measured on the current test part, in full, with
    the protocol's goals, and its goals agree with its table."""
    from ramir.checkpoint import read_metadata
    from ramir.evaluation import protocol
    from ramir.inference.restore import default_model_path

    extra = read_metadata(default_model_path())["extra"]
    record = extra.get("photo_eval_test")
    if record is None:
        pytest.skip(
            "the shipped model has no test-part record yet: run python -m "
            "ramir.evaluation.protocol src/ramir/assets/default_model.safetensors --in-place"
        )
    m = load_manifest()
    assert record["part"] == "test" and "max_images" not in record
    assert record["ids_sha256"] == protocol.part_digest("test", m)
    assert record["photos"] == len(m.split("eval", "test"))
    assert all(st["n"] == record["photos"] for st in record["table"].values())
    full = yaml.safe_load((REPO / "configs" / "data" / "photos_test.yaml").read_text())
    assert list(record["table"]) == [t["name"] for t in full["test"]]
    expected = [(c, s, g) for c, items in protocol.GOALS.items() for s, g in items]
    assert [(g["column"], g["statistic"], g["goal"]) for g in record["goals"]] == expected
    for g in record["goals"]:
        st = record["table"][g["column"]]
        value = st["mean_gain"] if g["statistic"] == "gain" else st[g["statistic"]]
        assert g["measured"] == value and g["met"] == (value >= g["goal"])
