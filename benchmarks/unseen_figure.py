"""Draw the README's before/after figure of the shipped model on test-part photos.

Four photos of the test part of the photo evaluation set (never trained on, never used
to choose), an (input, output) pair per test set, centre crops of whole-image runs,
written as ``docs/default_model_unseen.jpg``::

    python benchmarks/unseen_figure.py            # after `ramir data corpus --split eval`
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml
from PIL import Image

from ramir.demo import DemoConfig
from ramir.demo.figures import unseen_grid
from ramir.inference.restore import default_model_path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=default_model_path())
    p.add_argument("--data-config", type=Path, default=ROOT / "configs/data/photos_test.yaml")
    p.add_argument("--sets", nargs="+", default=["clean", "noise", "low_light", "jpeg_q20"])
    p.add_argument("--photos", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "docs/default_model_unseen.jpg")
    a = p.parse_args(argv)
    data = yaml.safe_load(a.data_config.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "unseen.png"
        unseen_grid(DemoConfig(), data, a.weights, png, sets=tuple(a.sets), photos=a.photos)
        Image.open(png).convert("RGB").save(a.out, quality=88)
    print(f"wrote {a.out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
