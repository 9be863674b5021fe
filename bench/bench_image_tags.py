"""Before/after image tags on scikit-image photos, as a Markdown table (docs/image-tags.md).

"Before" is ``workers/tagging/image.py`` at a git revision (the tagger that showed every WordNet
parent), "after" the working tree's; both serve the same published model::

    python -m bench.bench_image_tags --before c909ae1 coffee chelsea astronaut rocket
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from PIL import Image
from skimage import data

from shared.inference.registry import ModelRegistry
from workers.tagging.image import ImageTagger


def _module_at(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:workers/tagging/image.py"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "image_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("image_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", required=True, help="git revision of the old tagger")
    parser.add_argument("--models-dir", type=Path, default=Path("var/models"))
    parser.add_argument("photos", nargs="+", help="skimage.data names: coffee, chelsea, ...")
    args = parser.parse_args(argv)
    old = ModelRegistry(args.models_dir).get("image_tagger", _module_at(args.before).ImageTagger)
    new = ModelRegistry(args.models_dir).get("image_tagger", ImageTagger)
    print("| photo | before | after |\n|---|---|---|")
    for name in args.photos:
        image = Image.fromarray(getattr(data, name)())
        (before,) = old.predict([image])
        (after,) = new.predict([image])
        b = ", ".join(f"{n} {s:.3f}" for n, s in before.labels)
        a = ", ".join(
            f"{n} {s:.3f}" if after.levels[n] == "class" else f"*{n}* {s:.3f}"
            for n, s in after.labels
        )
        print(f"| `{name}` | {b} | {a} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
