"""The multi-task mixture: balance, crops/flips, identity, reproducibility (workers, DDP),
test sets, and config validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from ramir.config import ConfigError, from_dict
from ramir.data.config import DataConfig, load_data_config
from ramir.data.datasets import DatasetError
from ramir.data.mixture import MixtureDataset, build_mixture
from ramir.data.testsets import build_test_sets, synthetic_pairs

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


def _photo(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 4, y * 5, (x + y) * 2], 2) % 256
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """clean/ (4 photos) and pairs/lq + pairs/gt where lq = 255 - gt (so alignment shows)."""
    root = tmp_path_factory.mktemp("mix")
    for i in range(4):
        a = _photo(i)
        (root / "clean").mkdir(exist_ok=True)
        Image.fromarray(a).save(root / "clean" / f"c{i}.png")
    for i in range(3):
        a = _photo(10 + i)
        for sub, img in (("gt", a), ("lq", 255 - a)):
            (root / "pairs" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "pairs" / sub / f"p{i}.png")
    return root


def _cfg(root: Path, **over) -> DataConfig:
    data = {
        "root_dir": str(root),
        "patch_size": 16,
        "hflip": True,
        "vflip": True,
        "rot90": True,
        "identity": True,
        "seed": 3,
        "datasets": [
            {"name": "pairs", "layout": "paired", "root": "pairs"},
            {
                "name": "noise",
                "layout": "clean_folder",
                "root": "clean",
                "degradation": "gaussian_noise",
                "params": {"sigma": 25.0},
                "cache": True,
            },
            {"name": "jpeg", "layout": "clean_folder", "root": "clean", "degradation": "jpeg"},
        ],
    }
    data.update(over)
    return from_dict(DataConfig, data)


def _same(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["lq"], b["lq"])
        and torch.equal(a["gt"], b["gt"])
        and a["task"] == b["task"]
        and int(a["index"]) == int(b["index"])
    )


def test_round_robin_balance_shapes_and_ranges(folders):
    ds = build_mixture(_cfg(folders))
    assert ds.tasks == ["pairs", "noise", "jpeg", "identity"]
    assert len(ds) == 4 * 4  # n sources x largest source
    for i in range(len(ds)):
        s = ds[i]
        assert s["task"] == ds.tasks[i % 4] and s["index"] == i
        for k in ("lq", "gt"):
            assert s[k].shape == (3, 16, 16) and s[k].dtype == torch.float32
            assert 0 <= float(s[k].min()) and float(s[k].max()) <= 1
    assert "identity" in ds.describe()


def test_crops_and_flips_are_aligned(folders):
    ds = build_mixture(_cfg(folders))
    for i in range(0, 40, 4):  # the paired source: lq = 1 - gt pixel for pixel
        s = ds.sample(i % len(ds), epoch=i)
        assert s["task"] == "pairs"
        assert torch.allclose(s["lq"], 1 - s["gt"], atol=1e-6)


def test_identity_task_is_clean_to_clean(folders):
    ds = build_mixture(_cfg(folders))
    s = ds[3]
    assert s["task"] == "identity" and torch.equal(s["lq"], s["gt"])
    noisy = ds[1]
    assert noisy["task"] == "noise" and not torch.equal(noisy["lq"], noisy["gt"])


def test_each_pass_visits_every_image(folders):
    ds = build_mixture(_cfg(folders, identity=False, epoch_length=48))
    orders = []
    for epoch in range(6):
        # source 1 ("noise", 4 images) is used by samples 1, 4, 7, ...: every pass of 4
        # such samples visits each image once, in an order that changes between passes
        picks = [ds.locate(1 + 3 * j, epoch)[1] for j in range(16)]
        for p in range(4):
            assert sorted(picks[4 * p : 4 * p + 4]) == [0, 1, 2, 3]
        orders.append(tuple(picks))
    assert len(set(orders)) > 1


def test_official_prefix_sees_only_the_start_of_each_file_list(folders):
    """The release's sampling: sub-dataset i mod n, files from the start of each list,
    ceil(length / (n x streams)) of them per epoch, every epoch the same ones."""
    ds = build_mixture(_cfg(folders, identity=False, sampling="official_prefix",
                            official_streams=12))  # fmt: skip
    # default length as the release: smallest sub-dataset (3 pairs) x 3 types x 10 = 90;
    # 90 / (3 x 12) -> the first 3 files of every sub-dataset (of 3, 4 and 4)
    assert len(ds) == 90 and [ds.prefix_length(k) for k in range(3)] == [3, 3, 3]
    for epoch in (0, 5):
        seen = {k: set() for k in range(3)}
        for i in range(len(ds)):
            k, j = ds.locate(i, epoch)
            assert k == i % 3
            seen[k].add(j)
        assert seen == {0: {0, 1, 2}, 1: {0, 1, 2}, 2: {0, 1, 2}}  # c3 never seen
    more = build_mixture(_cfg(folders, identity=False, sampling="official_prefix",
                              official_streams=1))  # fmt: skip
    assert [more.prefix_length(k) for k in range(3)] == [3, 4, 4]  # whole lists
    assert "only the first 3 seen" in ds.describe()


def test_pure_function_of_seed_epoch_index(folders):
    cfg = _cfg(folders)
    a, b = build_mixture(cfg), build_mixture(cfg)
    # different call orders, same samples
    for i in [5, 0, 13, 7]:
        assert _same(a[i], b.sample(i))
    a.set_epoch(1)
    assert a.epoch == 1
    assert _same(a[5], b.sample(5, epoch=1))
    assert not torch.equal(a[5]["lq"], b.sample(5, epoch=0)["lq"])
    c = build_mixture(_cfg(folders, seed=4))
    assert not torch.equal(c.sample(5, epoch=0)["lq"], b.sample(5, epoch=0)["lq"])
    with pytest.raises(IndexError):
        a[len(a)]


def test_weighted_sampling(folders):
    cfg = _cfg(
        folders,
        identity=False,
        sampling="weighted",
        epoch_length=400,
        datasets=[
            {"name": "pairs", "layout": "paired", "root": "pairs", "weight": 3.0},
            {
                "name": "noise",
                "layout": "clean_folder",
                "root": "clean",
                "degradation": "gaussian_noise",
                "weight": 1.0,
            },
        ],
    )
    ds = build_mixture(cfg)
    ks = [ds.locate(i, 0)[0] for i in range(400)]
    assert abs(ks.count(0) / 400 - 0.75) < 0.07
    assert ks == [ds.locate(i, 0)[0] for i in range(400)]


def test_identity_weight_sets_how_often_clean_to_clean_is_drawn(folders):
    base = {"identity": True, "sampling": "weighted", "epoch_length": 600}
    for weight, share in ((3.0, 0.5), (0.0, 0.0)):
        ds = build_mixture(_cfg(folders, identity_weight=weight, **base))
        assert ds.tasks[-1] == "identity"
        ks = [ds.locate(i, 0)[0] for i in range(600)]
        assert abs(ks.count(len(ds.tasks) - 1) / 600 - share) < 0.06
    with pytest.raises(ValueError, match="identity_weight must be >= 0, got -1"):
        _cfg(folders, identity_weight=-1.0, **base)
    with pytest.raises(ValueError, match="used only with sampling: weighted"):
        _cfg(folders, identity_weight=2.0)


def test_identity_tone_gives_identical_toned_pairs_and_leaves_the_rest(folders):
    """identity_tone: a toned identity sample is still clean -> clean (lq == gt) but its
    tone differs from the plain crop; the other tasks' samples, and everything with 0,
    are those of the stream without it."""
    base = {"identity": True, "sampling": "weighted", "identity_weight": 3.0, "epoch_length": 40}
    plain = build_mixture(_cfg(folders, **base))
    toned = build_mixture(_cfg(folders, identity_tone=1.0, **base))
    again = build_mixture(_cfg(folders, identity_tone=1.0, **base))
    zero = build_mixture(_cfg(folders, identity_tone=0.0, **base))
    n_id = 0
    for i in range(40):
        a, b, c, z = plain.sample(i), toned.sample(i), again.sample(i), zero.sample(i)
        assert torch.equal(a["lq"], z["lq"]) and torch.equal(a["gt"], z["gt"])
        assert torch.equal(b["lq"], c["lq"]) and torch.equal(b["gt"], c["gt"])  # seeded
        if a["task"] != "identity":
            assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
            continue
        n_id += 1
        assert torch.equal(b["lq"], b["gt"])
        assert float((b["gt"] - a["gt"]).abs().mean()) > 0.005
        assert 0.0 <= float(b["gt"].min()) and float(b["gt"].max()) <= 1.0
    assert n_id >= 5
    with pytest.raises(ValueError, match=r"identity_tone must be in \[0, 1\], got 1.5"):
        _cfg(folders, identity_tone=1.5, **base)


def test_scene_tone_tones_the_clean_scene_before_degrading_except_for_tone_tasks(folders):
    """scene_tone: a sample of an on-the-fly task has its clean crop toned first, and the
    degraded side is the degradation of that toned crop (the noise is the same noise);
    files of paired datasets, identity and the tone-changing tasks (here haze, as a task
    and as a step of a chain) are left alone; 0 keeps the stream."""
    from ramir.data.mixture import SCENE_TONE_EXEMPT

    assert {"haze", "low_light", "identity"} <= SCENE_TONE_EXEMPT
    extra = [
        {"name": "haze", "layout": "clean_folder", "root": "clean", "degradation": "haze"},
        {
            "name": "hazy_mix",
            "layout": "clean_folder",
            "root": "clean",
            "degradation": "chain",
            "params": {"steps": [{"name": "haze"}, {"name": "jpeg", "quality": 50}]},
        },
    ]
    base = _cfg(folders, epoch_length=60)
    datasets = [dict(name=d.name, layout=d.layout, root=d.root, degradation=d.degradation,
                     params=dict(d.params)) for d in base.datasets] + extra  # fmt: skip
    kw = {"datasets": datasets, "epoch_length": 60}
    plain = build_mixture(_cfg(folders, **kw))
    toned = build_mixture(_cfg(folders, scene_tone=1.0, **kw))
    again = build_mixture(_cfg(folders, scene_tone=1.0, **kw))
    zero = build_mixture(_cfg(folders, scene_tone=0.0, **kw))
    seen: dict[str, int] = {}
    for i in range(60):
        a, b, c, z = plain.sample(i), toned.sample(i), again.sample(i), zero.sample(i)
        assert torch.equal(a["lq"], z["lq"]) and torch.equal(a["gt"], z["gt"])
        assert torch.equal(b["lq"], c["lq"]) and torch.equal(b["gt"], c["gt"])  # seeded
        src = plain.sources[plain.locate(i, 0)[0]].name
        seen[src] = seen.get(src, 0) + 1
        if src in ("noise", "jpeg"):
            assert float((b["gt"] - a["gt"]).abs().mean()) > 0.005  # a toned scene
            if src == "noise":  # the same noise on the toned scene (up to clipping)
                inner = (b["gt"] > 0.2) & (b["gt"] < 0.8) & (a["gt"] > 0.2) & (a["gt"] < 0.8)
                diff = (b["lq"] - b["gt"]) - (a["lq"] - a["gt"])
                assert float(diff[inner].abs().median()) < 0.005
        else:  # paired files, identity, haze and a chain with haze: untouched
            assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]), src
    assert {"noise", "jpeg", "pairs", "haze", "hazy_mix"} <= set(seen)
    with pytest.raises(ValueError, match=r"scene_tone must be in \[0, 1\], got -0.1"):
        _cfg(folders, scene_tone=-0.1)


def test_tone_shift_kinds_are_mild_and_monotone():
    """Each kind keeps the photo's order of brightness (a global monotone curve) and its
    contrast within a mild range: dim darkens, veil and bright lighten."""
    from ramir.data.transforms import tone_shift

    x = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16, 1).repeat(3, 2)
    means = []
    for seed in range(60):
        y = tone_shift(x, np.random.default_rng(seed))
        assert y.shape == x.shape and y.dtype == np.float32
        flat = y[..., 0].ravel()
        assert np.all(np.diff(flat) >= -1e-6)  # monotone
        span = float(flat[-1] - flat[0])
        assert 0.4 <= span <= 1.0
        means.append(float(y.mean()) - float(x.mean()))
    assert min(means) < -0.1 and max(means) > 0.1  # both darker and paler photos


def test_dataloader_two_workers_matches_direct(folders):
    cfg = _cfg(folders)
    ds = build_mixture(cfg)
    ref = build_mixture(cfg)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = [b for b in loader]
        for batch in got:
            for j, idx in enumerate(batch["index"].tolist()):
                s = ref.sample(idx, epoch=epoch)
                assert torch.equal(batch["lq"][j], s["lq"]) and torch.equal(batch["gt"][j], s["gt"])
                assert batch["task"][j] == s["task"]


def test_distributed_sampler_two_replicas(folders):
    cfg = _cfg(folders)
    ds = build_mixture(cfg)
    ref = build_mixture(cfg)
    seen: list[int] = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(2)
        ds.set_epoch(2)
        for batch in DataLoader(ds, batch_size=3, sampler=sampler, num_workers=0):
            for j, idx in enumerate(batch["index"].tolist()):
                seen.append(idx)
                assert torch.equal(batch["lq"][j], ref.sample(idx, epoch=2)["lq"])
    assert sorted(seen) == list(range(len(ds)))


def test_patch_larger_than_image_fails_loudly(folders):
    ds = build_mixture(_cfg(folders, patch_size=64))
    with pytest.raises(DatasetError, match="smaller than patch_size 64"):
        ds[0]


def test_size_mismatch(tmp_path):
    Image.fromarray(_photo(0, 20, 20)).save((tmp_path / "gt").mkdir() or tmp_path / "gt" / "a.png")
    Image.fromarray(_photo(0, 18, 20)).save((tmp_path / "lq").mkdir() or tmp_path / "lq" / "a.png")
    base = {"root_dir": str(tmp_path), "patch_size": 8}
    spec = {"name": "p", "layout": "paired", "root": "."}
    ds = build_mixture(from_dict(DataConfig, {**base, "datasets": [spec]}))
    with pytest.raises(DatasetError, match="size mismatch"):
        ds[0]
    ok = build_mixture(
        from_dict(DataConfig, {**base, "datasets": [{**spec, "on_size_mismatch": "crop"}]})
    )
    assert ok[0]["lq"].shape == (3, 8, 8)


def test_synthetic_pairs_fixed_test_set(folders):
    t1 = synthetic_pairs(folders / "clean", "gaussian_noise", params={"sigma": 25.0}, seed=0)
    t2 = synthetic_pairs(folders / "clean", "gaussian_noise", params={"sigma": 25.0}, seed=0)
    t3 = synthetic_pairs(folders / "clean", "gaussian_noise", params={"sigma": 25.0}, seed=1)
    assert len(t1) == 4 and t1.task == "noise"
    a = t1[2]
    assert a["gt"].shape == (3, 40, 48) and a["key"] == "c2" and a["name"] == "noise"
    assert torch.equal(a["lq"], t2[2]["lq"]) and not torch.equal(a["lq"], t3[2]["lq"])
    resid = (a["lq"] - a["gt"]) * 255
    assert 20 < float(resid.std()) < 30
    # an image's degradation does not depend on the other images in the set
    only = synthetic_pairs([folders / "clean" / "c2.png"], "gaussian_noise", params={"sigma": 25.0})
    assert torch.equal(only[0]["lq"], a["lq"])
    crop = synthetic_pairs(folders / "clean", "jpeg", params={"quality": 50}, center_crop=32)
    assert crop[0]["lq"].shape == (3, 32, 32)


def test_test_sets_from_config(folders):
    cfg = _cfg(
        folders,
        test=[
            {"name": "pairs", "layout": "paired", "root": "pairs"},
            {
                "name": "blur",
                "layout": "clean_folder",
                "root": "clean",
                "degradation": "gaussian_blur",
                "params": {"sigma": 2.0},
                "center_crop": 24,
                "group": "g",
            },
        ],
    )
    sets = build_test_sets(cfg)
    assert list(sets) == ["pairs", "blur"]
    assert sets["pairs"][0]["lq"].shape == (3, 40, 48)
    assert sets["blur"][1]["gt"].shape == (3, 24, 24) and sets["blur"].task == "blur"


def test_synthetic7_recipe_runs_on_bundled_photos():
    cfg = load_data_config(CONFIGS / "synthetic7.yaml", ["epoch_length=16", "patch_size=32"])
    ds = MixtureDataset(cfg)
    assert ds.tasks == [
        "haze",
        "rain",
        "motion_blur",
        "low_light",
        "noise",
        "blur",
        "jpeg",
        "identity",
    ]
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["lq"].shape == (8, 3, 32, 32) and batch["task"] == ds.tasks
    tests = build_test_sets(cfg)
    assert len(tests) == 7 and all(len(t) == 3 for t in tests.values())


def test_recipes_parse():
    for name in ("7task", "3task", "5task", "synthetic7"):
        cfg = load_data_config(CONFIGS / f"{name}.yaml")
        assert cfg.datasets and cfg.test
    seven = load_data_config(CONFIGS / "7task.yaml")
    assert len(seven.datasets) == 7 and seven.identity
    assert [s.task_name() for s in seven.datasets] == [
        "haze",
        "rain",
        "motion_blur",
        "low_light",
        "noise",
        "blur",
        "jpeg",
    ]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "x", "layout": "nope"}, "unknown layout"),
        ({"name": "x", "layout": "rain", "options": {"split": "a"}}, r"unknown option\(s\) split"),
        ({"name": "x", "layout": "clean_folder"}, "set 'degradation'"),
        (
            {"name": "x", "layout": "clean_folder", "degradation": "jpeg", "params": {"q": 1}},
            r"unknown parameter\(s\) q",
        ),
        ({"name": "x", "layout": "clean_folder", "degradation": "fog"}, "unknown degradation"),
        ({"name": "x", "layout": "rain", "weight": 2.0}, "weighted"),
        ({"name": "x", "layout": "rain", "colour": 1}, "unknown key"),
    ],
)
def test_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(DataConfig, {"datasets": [spec]})


def test_load_data_config_from_experiment_section(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text(
        "model: {name: nafnet}\n"
        "data:\n  patch_size: 32\n  datasets:\n"
        "    - {name: n, layout: skimage_photos, degradation: gaussian_noise}\n"
    )
    cfg = load_data_config(p, ["data.patch_size=48", "seed=5"])
    assert cfg.patch_size == 48 and cfg.seed == 5 and cfg.datasets[0].name == "n"


def test_preload_decodes_cached_photos_once_into_a_shared_store(folders, tmp_path, monkeypatch):
    """The store holds the cached sources' photos (each once); samples do not change, and
    spawned workers (which get a pickled copy) read the same pixels from the file."""
    cfg = _cfg(folders, cache_dir=str(tmp_path))
    ds, ref = build_mixture(cfg), build_mixture(cfg)
    assert ds.preload() == 4  # the 4 clean photos of "noise" and of identity, once
    assert ds.preload() == 4 and len(list(tmp_path.glob("ramir-pixels-*"))) == 1
    import ramir.data.sources as sources

    decoded = []
    real = sources.read_array
    monkeypatch.setattr(sources, "read_array", lambda p: decoded.append(p) or real(p))
    cached = [i for i in range(len(ds)) if ds.sources[ds.locate(i, 1)[0]].cache]
    assert len(cached) == len(ds) // 2  # noise and identity; pairs and jpeg are not cached
    for i in range(len(ds)):
        b = ref.sample(i, epoch=1)
        decoded.clear()
        a = ds.sample(i, epoch=1)
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
        if i in cached:
            assert not decoded, f"sample {i} decoded {decoded}"
    monkeypatch.undo()
    loader = DataLoader(
        ds, batch_size=4, num_workers=1, multiprocessing_context="spawn", shuffle=False
    )
    ds.set_epoch(0)
    for batch in loader:
        for j, idx in enumerate(batch["index"].tolist()):
            assert torch.equal(batch["lq"][j], ref.sample(idx, epoch=0)["lq"])
    ds.close()
    assert not list(tmp_path.glob("ramir-pixels-*"))  # the file is gone with the store
    assert torch.equal(ds.sample(0, epoch=1)["gt"], ref.sample(0, epoch=1)["gt"])


def test_the_store_is_bounded_and_photos_past_the_bound_are_decoded_per_sample(
    folders, tmp_path, caplog
):
    ds = build_mixture(_cfg(folders, cache_dir=str(tmp_path)))
    one = 40 * 48 * 3
    with caplog.at_level("WARNING", logger="ramir.data.store"):
        assert ds.preload(max_bytes=2 * one + 10) == 2
    assert "2 of 4 images do not fit" in caplog.text
    assert ds.store is not None and ds.store.nbytes == 2 * one
    ref = build_mixture(_cfg(folders))
    for i in range(len(ds)):
        assert torch.equal(ds.sample(i, epoch=0)["lq"], ref.sample(i, epoch=0)["lq"])
    assert len(ds.store) == 2  # reading the others did not grow it
    ds.close()
