"""The image tagger on the real model: built once (cached in ATELIER_MODELS_DIR), then served."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.inference.registry import ModelRegistry
from shared.model_versions import ModelError
from workers.tagging.concepts import CURATED, MIN_GAIN
from workers.tagging.image import ImageTagger, ImageTags
from workers.training.build import image_tagger as builder

pytestmark = pytest.mark.models
skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def models_dir() -> Path:
    path = Path(os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    if not builder.is_published(path, builder.NAME, builder.VERSION):
        pytest.importorskip("torch", reason="building the image tagger needs torch")
    builder.build(path)
    return path


@pytest.fixture(scope="module")
def tagger(models_dir: Path) -> ImageTagger:
    return ModelRegistry(models_dir).get("image_tagger", ImageTagger)


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skdata.chelsea())


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(skdata.coffee())


def names(tags: ImageTags) -> list[str]:
    return [n for n, _ in tags.labels]


def jpeg(image: Image.Image, **kwargs: object) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **kwargs)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_build_is_idempotent(models_dir: Path) -> None:
    logs: list[str] = []
    path = builder.build(models_dir, log=logs.append)
    assert path == models_dir / builder.NAME / builder.VERSION
    assert logs == [f"{builder.NAME}/{builder.VERSION} is up to date"]


def test_manifest_records_verification(tagger: ImageTagger) -> None:
    m = tagger.manifest
    assert m.kind == "image_tagger"
    assert m.license == "Apache-2.0" and "EfficientNet" in m.attribution
    assert m.metrics["onnx_vs_torch_max_abs_diff_logits"] < 1e-3
    assert {"model.onnx", "labels.txt", "taxonomy.json"} <= m.files.keys()


def test_onnx_matches_torch(tagger: ImageTagger, coffee: Image.Image) -> None:
    torch = pytest.importorskip("torch")
    from workers.training.efficientnet_lite import load_pretrained

    torch.set_num_threads(1)
    pixels = tagger.preprocess(coffee)[None]
    with torch.no_grad():
        t_logits, t_emb = load_pretrained()(torch.from_numpy(pixels))
    o_logits, o_emb = tagger.session().run(["logits", "embedding"], {"pixels": pixels})
    assert np.abs(o_logits - t_logits.numpy()).max() < 1e-3
    assert np.abs(o_emb - t_emb.numpy()).max() < 1e-3


def test_cat_photo_gets_cat(tagger: ImageTagger, chelsea: Image.Image) -> None:
    (tags,) = tagger.predict([chelsea])
    assert "cat" in names(tags)
    scores = [s for _, s in tags.labels]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 for s in scores)
    assert tags.embedding.shape == (1280,) and tags.embedding.dtype == np.float32
    assert np.linalg.norm(tags.embedding) == pytest.approx(1.0, abs=1e-5)


def test_coffee_photo_gets_espresso_or_cup(tagger: ImageTagger, coffee: Image.Image) -> None:
    (tags,) = tagger.predict([coffee])
    assert {"espresso", "cup"} & set(names(tags))


def test_parent_concept_sums_its_classes(tagger: ImageTagger, chelsea: Image.Image) -> None:
    # every_concept: "mammal" only repeats "cat" here, so a served tag list leaves it out.
    labels = dict(tagger.predict([chelsea], top_k=50, min_score=0.0, every_concept=True)[0].labels)
    cats = labels.get("tabby", 0) + labels.get("tiger cat", 0) + labels.get("egyptian cat", 0)
    assert labels["domestic cat"] >= cats - 1e-5
    assert labels["animal"] >= labels["mammal"] >= labels["cat"]


def test_batch_equals_singles(tagger: ImageTagger, chelsea: Image.Image) -> None:
    images = [chelsea, Image.fromarray(skdata.coffee()), Image.fromarray(skdata.astronaut())]
    batch = tagger.predict(images, max_batch=32)
    singles = [tagger.predict([im])[0] for im in images]
    for b, s in zip(batch, singles, strict=True):
        assert names(b) == names(s)
        np.testing.assert_allclose([x for _, x in b.labels], [x for _, x in s.labels], atol=1e-4)
        np.testing.assert_allclose(b.embedding, s.embedding, atol=1e-4)
    # A max_batch smaller than the input splits into several runs with the same result.
    split = tagger.embed(images, max_batch=2)
    np.testing.assert_allclose(split, np.stack([s.embedding for s in singles]), atol=1e-4)


def test_embed_pixels_matches_embed(tagger: ImageTagger, chelsea: Image.Image) -> None:
    pixels = np.stack([tagger.preprocess(chelsea)] * 2)
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == np.float32
    emb = tagger.embed_pixels(pixels)
    np.testing.assert_allclose(emb[0], tagger.embed([chelsea])[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert tagger.embed([]).shape == (0, 1280) and tagger.predict([]) == []
    with pytest.raises(ValueError, match="expected pixels"):
        tagger.embed_pixels(np.zeros((1, 3, 100, 100), np.float32))


def _modes(rgb: Image.Image) -> dict[str, Image.Image]:
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    transparent = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    transparent.info["transparency"] = 0
    assert gray16.mode == "I;16"
    return {
        "RGBA": rgb.convert("RGBA"),
        "LA": rgb.convert("LA"),
        "L": rgb.convert("L"),
        "1": rgb.convert("1"),
        "P": rgb.convert("P", palette=Image.Palette.ADAPTIVE),
        "P+transparency": transparent,
        "CMYK": rgb.convert("CMYK"),
        "I;16": gray16,
        "I": gray16.convert("I"),
        "F": Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255.0),
    }


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "P+transparency", "CMYK", "I;16"])
def test_odd_modes(tagger: ImageTagger, chelsea: Image.Image, mode: str) -> None:
    image = _modes(chelsea)[mode]
    pixels = tagger.preprocess(image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= -1.0 and pixels.max() <= 1.0
    (tags,) = tagger.predict([image])
    assert tags.labels and np.isfinite(tags.embedding).all()


def test_high_bit_depth_is_scaled_not_clipped(tagger: ImageTagger, chelsea: Image.Image) -> None:
    modes = _modes(chelsea)
    gray = tagger.preprocess(modes["L"])
    for mode in ("I;16", "I", "F"):
        np.testing.assert_allclose(tagger.preprocess(modes[mode]), gray, atol=2 / 128)


def test_transparent_pixels_become_white(tagger: ImageTagger) -> None:
    clear = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    np.testing.assert_allclose(tagger.preprocess(clear), (255 - 127) / 128)


@pytest.mark.parametrize("size", [(1, 1), (3, 2000), (2000, 3), (5000, 4000), (224, 224)])
def test_any_size_and_aspect(tagger: ImageTagger, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    for candidate in (image, jpeg(image)):
        pixels = tagger.preprocess(candidate)
        assert pixels.shape == (3, 224, 224) and np.isfinite(pixels).all()
    assert len(tagger.predict([image, jpeg(image)])) == 2


def test_jpeg_draft_decode_matches_full_decode(tagger: ImageTagger, chelsea: Image.Image) -> None:
    big = chelsea.resize((chelsea.width * 4, chelsea.height * 4), Image.Resampling.BICUBIC)
    lazy = jpeg(big)  # not loaded: preprocess may decode it at reduced scale
    full = jpeg(big)
    full.load()  # loaded: no draft possible
    emb_lazy, emb_full = tagger.embed([lazy, full])
    assert float(emb_lazy @ emb_full) > 0.98
    assert "cat" in names(tagger.predict([jpeg(big)])[0])


def test_exif_orientation_is_applied(tagger: ImageTagger, chelsea: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    stored = chelsea.transpose(Image.Transpose.ROTATE_90)
    oriented = jpeg(stored, exif=exif.tobytes())
    upright = jpeg(chelsea)
    expected = tagger.preprocess(upright)
    # JPEG blocks fall differently on the rotated copy, so compare on average.
    assert np.abs(tagger.preprocess(oriented) - expected).mean() < 0.02
    assert np.abs(tagger.preprocess(jpeg(stored)) - expected).mean() > 0.1


def test_undecodable_image_is_bad_input(tagger: ImageTagger, chelsea: Image.Image) -> None:
    buf = io.BytesIO()
    chelsea.save(buf, "JPEG")
    data = buf.getvalue()
    truncated = Image.open(io.BytesIO(data[: len(data) // 2]))  # header intact, pixels cut
    with pytest.raises(ValueError, match="cannot decode image"):
        tagger.predict([truncated])


def test_concept_names(tagger: ImageTagger) -> None:
    concepts = tagger.concept_names()
    assert len(concepts) == len(set(concepts)) > 1000
    assert {"tabby", "cat", "feline", "mammal", "animal", "espresso", "beverage"} <= set(concepts)
    assert not {"entity", "physical entity", "object", "whole"} & set(concepts)
    # Single-child links ("coffee" covers only "espresso") and abstract nodes are not tags.
    assert not {"coffee", "kernel", "grain", "shape", "round shape", "flavorer"} & set(concepts)


@pytest.mark.parametrize("photo", ["chelsea", "coffee", "astronaut", "rocket", "camera", "moon"])
def test_one_tag_per_concept_on_real_photos(tagger: ImageTagger, photo: str) -> None:
    """No parent in a photo's tags repeats a tag below it, unless it is a curated one."""
    image = Image.fromarray(getattr(skdata, photo)())
    (tags,) = tagger.predict([image], top_k=50, min_score=0.02)
    members = {n: set(tagger._plan.members[j]) for j, n in enumerate(tagger._plan.names)}
    scores = dict(tags.labels)
    assert tags.levels.keys() == scores.keys()
    for a, level in tags.levels.items():
        assert level == ("class" if a in tagger.class_names else "concept")
        for b in scores:
            if b != a:
                assert members[a] != members[b]
            if members[b] < members[a] and a not in CURATED:
                assert scores[a] - scores[b] >= MIN_GAIN, (photo, a, b)


def test_int8_copy_serves_and_records_its_accuracy(
    models_dir: Path, chelsea: Image.Image, coffee: Image.Image
) -> None:
    builder.build(models_dir, int8=True)  # int8 is not built by default: it is not served
    int8 = ModelRegistry(models_dir).get(builder.INT8_NAME, ImageTagger)
    metrics = int8.manifest.metrics
    assert metrics["top1_agreement_vs_fp32_when_fp32_p_gt_0.3"] >= 0.9
    # 0.93 on an AVX2-only CPU, whose int8 kernels need 7-bit weights (build_int8).
    assert metrics["embedding_cosine_vs_fp32_mean"] > 0.9
    cat, cup = int8.predict([chelsea, coffee])
    assert "cat" in names(cat)
    assert {"espresso", "cup"} & set(names(cup))


def test_corrupt_model_gives_clear_error_and_registry_recovers(
    models_dir: Path, tmp_path: Path, chelsea: Image.Image
) -> None:
    src = models_dir / builder.NAME / builder.VERSION
    dst = tmp_path / builder.NAME / builder.VERSION
    shutil.copytree(src, dst)
    model_file = dst / "model.onnx"
    good = model_file.read_bytes()
    model_file.write_bytes(good[: len(good) // 3])

    registry = ModelRegistry(tmp_path, check_interval=0.0)
    with pytest.raises(ModelError, match=r"model\.onnx is corrupt"):
        registry.get("image_tagger", ImageTagger)
    # Without the hash check onnxruntime itself refuses the file: still a ModelError.
    with pytest.raises(ModelError, match="cannot load image_tagger"):
        ImageTagger(dst, verify=False)

    model_file.write_bytes(good)
    tagger = registry.get("image_tagger", ImageTagger)
    assert "cat" in names(tagger.predict([chelsea])[0])
