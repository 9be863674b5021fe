"""The fast paths of image preparation behave like the slow ones they replaced.

Behaviour only (no timings): a JPEG decoded once in draft mode gives the same pHash and tags as a
full decode, records the original size, and a batch's near-duplicate scan (one query) answers
as one query per item did.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from shared.auth import create_tenant
from shared.config import WorkerSettings
from shared.db.models import Asset, ContentItem, ContentKind
from shared.imaging import (
    WORKING_ROLE,
    _popcount_bytes,
    decode_image,
    hamming,
    hamming_many,
    hash_array,
    make_renditions,
    open_image,
    perceptual_hash,
    thumbnail,
)
from workers.context import WorkerContext
from workers.tagging.duplicates import find_near_duplicate
from workers.tagging.image import RESIZE_SIZE
from workers.tagging.preparation import prepare_images

skdata = pytest.importorskip("skimage.data")


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _photo(name: str, scale: int = 1) -> Image.Image:
    im = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.BICUBIC)


def test_draft_decode_is_smaller_and_records_the_original_size() -> None:
    big = _photo("chelsea", 4)  # 1804 x 1200
    image, size = decode_image(_jpeg(big), min_size=256)
    assert size == big.size
    assert image.mode == "RGB"
    assert min(image.size) >= 256 and image.width < big.width
    # Without min_size (or for other formats) nothing is scaled.
    assert decode_image(_jpeg(big))[0].size == big.size


def test_original_size_follows_exif_orientation() -> None:
    upright = _photo("chelsea", 2)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    image, size = decode_image(_jpeg(stored, exif=exif.tobytes()), min_size=256)
    assert size == upright.size  # as displayed, like open_image(...).size
    assert size == open_image(_jpeg(stored, exif=exif.tobytes())).size
    assert image.width > image.height


def test_non_jpeg_and_transparency_decode_like_open_image() -> None:
    rgba = Image.new("RGBA", (640, 480), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    image, size = decode_image(buf.getvalue(), min_size=256)
    assert size == (640, 480) and image.size == (640, 480)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_truncated_jpeg_still_fails() -> None:
    data = _jpeg(_photo("coffee", 2))
    with pytest.raises(OSError):
        decode_image(data[: len(data) // 2], min_size=256)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
@pytest.mark.parametrize("scale", [1, 3])
def test_draft_decode_keeps_the_phash(name: str, scale: int) -> None:
    data = _jpeg(_photo(name, scale))
    drafted, _ = decode_image(data, min_size=256)
    assert hamming(perceptual_hash(drafted), perceptual_hash(open_image(data))) <= 2


def test_hamming_many_matches_hamming() -> None:
    rng = np.random.default_rng(0)
    hashes = [f"{int(x):016x}" for x in rng.integers(0, 2**63, size=50, dtype=np.int64)]
    hashes.append("ffffffffffffffff")
    expected = [hamming(hashes[3], h) for h in hashes]
    assert hamming_many(hashes[3], hash_array(hashes)).tolist() == expected
    # The numpy 1.x fallback agrees too.
    assert _popcount_bytes(hash_array(hashes) ^ np.uint64(int(hashes[3], 16))).tolist() == expected
    assert hamming_many(hashes[3], hash_array([])).tolist() == []


@pytest.mark.models
def test_draft_decode_keeps_the_tags(models_dir: Path) -> None:
    from shared.inference.registry import ModelRegistry
    from workers.tagging.image import ImageTagger

    tagger = ModelRegistry(models_dir, threads=1).get("image_tagger", ImageTagger)
    for name in ("chelsea", "coffee", "rocket"):
        data = _jpeg(_photo(name, 3))
        drafted, _ = decode_image(data, min_size=256)
        full, fast = tagger.predict([open_image(data), drafted])
        assert float(full.embedding @ fast.embedding) > 0.98
        assert full.labels[0][0] == fast.labels[0][0]
        top = {n for n, _ in full.labels[:5]}
        # Parents that add nothing are not tags, so a photo may have fewer than five.
        assert len(top & {n for n, _ in fast.labels[:5]}) >= min(4, len(top))


# --- one near-duplicate query per batch ------------------------------------------------------


@pytest.fixture
def ctx(sqlite_url: str, tmp_path: Path, models_dir: Path) -> WorkerContext:
    settings = WorkerSettings(
        environment="test",
        database_url=sqlite_url,
        storage_url=f"file://{tmp_path / 'blobs'}",
        models_dir=models_dir,
    )
    return WorkerContext(settings=settings)


def _items(ctx: WorkerContext, tenant_id: str, photos: list[bytes]) -> list[str]:
    ids = []
    with ctx.session() as s:
        for data in photos:
            blob = ctx.storage.put_bytes(data)
            item = ContentItem(tenant_id=tenant_id, kind=ContentKind.image)
            item.assets.append(
                Asset(
                    role="original",
                    storage_key=blob.key,
                    sha256=blob.sha256,
                    mime_type="image/jpeg",
                    byte_size=blob.size,
                    width=1,  # the worker records the real size
                    height=1,
                )
            )
            s.add(item)
            s.commit()  # one by one: created_at gives the age order
            ids.append(item.id)
    return ids


def _load(s: Session, ids: list[str]) -> list[ContentItem]:
    rows = {r.id: r for r in s.scalars(select(ContentItem).where(ContentItem.id.in_(ids)))}
    return [rows[i] for i in ids]


def test_batch_scan_flags_the_oldest_near_duplicate_with_one_query(ctx: WorkerContext) -> None:
    with ctx.session() as s:
        tenant = create_tenant(s, name=f"t-{uuid.uuid4().hex[:8]}").id
        other = create_tenant(s, name=f"o-{uuid.uuid4().hex[:8]}").id
    cat = _photo("chelsea", 3)
    recrop = cat.crop((6, 4, cat.width - 3, cat.height - 2))
    # Another tenant's copy is never a match.
    (foreign,) = _items(ctx, other, [_jpeg(cat)])
    ids = _items(ctx, tenant, [_jpeg(cat), _jpeg(_photo("coffee", 3)), _jpeg(recrop), _jpeg(cat)])

    selects: list[str] = []

    def count(_conn: object, _cur: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " UNION " in statement:
            selects.append(statement)

    # The engine the worker's sessions are bound to (get_engine's small cache may have made
    # another one for the same URL since, when many test databases came and went).
    with ctx.session() as s:
        engine = s.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        with ctx.session() as s:
            items = _load(s, ids)
            images = prepare_images(ctx, s, items, model_resize=RESIZE_SIZE)
            s.commit()
            assert [im is not None for im in images] == [True] * 4
            assert [it.duplicate_of for it in items] == [None, None, ids[0], ids[0]]
            original = next(a for a in items[0].assets if a.role == "original")
            assert (original.width, original.height) == cat.size
            thumb = next(a for a in items[0].assets if a.role == "thumbnail")
            assert max(thumb.width, thumb.height) == ctx.settings.thumbnail_size
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # One query for the whole batch, where item-by-item scanning made one per item.
    assert len(selects) == 1

    with ctx.session() as s:
        items = _load(s, ids)
        # Same answers as the single-item scan gives now that every pHash is stored...
        for it in items[1:]:
            assert find_near_duplicate(s, it, max_distance=ctx.settings.phash_max_distance) == (
                it.duplicate_of
            )
        # ...and re-tagging the original does not make it a duplicate of its own copies.
        again = prepare_images(ctx, s, [items[0]], model_resize=RESIZE_SIZE)
        assert again[0] is not None and items[0].duplicate_of is None
        assert foreign not in {it.duplicate_of for it in items}


# --- the gateway's working copy --------------------------------------------------------------


def test_renditions_come_from_one_decode() -> None:
    image, _ = decode_image(_jpeg(_photo("chelsea", 3)), min_size=256)  # 1353 x 900 -> 677 x 450
    made = make_renditions(image, working_size=256, thumbnail_size=256, thumbnail_format="jpeg")
    working, thumb = made.files
    # The centre square the tagger sees, scaled to its resize; uncompressed pixels.
    assert (working.role, working.width, working.height) == (WORKING_ROLE, 256, 256)
    assert len(working.data) > 256 * 256 * 3
    assert Image.open(io.BytesIO(working.data)).size == (256, 256)
    assert (thumb.role, thumb.mime_type, thumb.width, thumb.height) == (
        "thumbnail", "image/jpeg", 256, 170,
    )  # fmt: skip
    # Hashed before JPEG encoding, so the stored thumbnail hashes (almost) the same.
    assert hamming(made.phash, perceptual_hash(Image.open(io.BytesIO(thumb.data)))) <= 2
    # Small images are not scaled up: the working copy is their centre square as it is.
    small = Image.new("RGB", (200, 120), (10, 20, 30))
    working, thumb = make_renditions(
        small, working_size=256, thumbnail_size=256, thumbnail_format="webp"
    ).files
    assert (working.width, working.height) == (120, 120) and thumb.data[:4] == b"RIFF"
    assert (thumb.width, thumb.height) == (200, 120)


def _with_working_copy(
    ctx: WorkerContext, tenant_id: str, photo: Image.Image, *, working: bytes | None = None
) -> str:
    data = _jpeg(photo)
    image, size = decode_image(data, min_size=256)
    made = make_renditions(image, working_size=256, thumbnail_size=256, thumbnail_format="jpeg")
    with ctx.session() as s:
        item = ContentItem(tenant_id=tenant_id, kind=ContentKind.image, phash=made.phash)
        blob = ctx.storage.put_bytes(data)
        item.assets.append(
            Asset(role="original", storage_key=blob.key, sha256=blob.sha256,
                  mime_type="image/jpeg", byte_size=blob.size, width=size[0], height=size[1])
        )  # fmt: skip
        for r in made.files:
            payload = working if (working is not None and r.role == WORKING_ROLE) else r.data
            b = ctx.storage.put_bytes(payload)
            item.assets.append(
                Asset(role=r.role, storage_key=b.key, sha256=b.sha256, mime_type=r.mime_type,
                      byte_size=b.size, width=r.width, height=r.height)
            )  # fmt: skip
        s.add(item)
        s.commit()
        return item.id


def test_worker_reads_the_working_copy_and_falls_back_to_the_original(
    ctx: WorkerContext, caplog: pytest.LogCaptureFixture
) -> None:
    with ctx.session() as s:
        tenant = create_tenant(s, name=f"w-{uuid.uuid4().hex[:8]}").id
    photo = _photo("coffee", 3)  # 1800 x 1200
    good = _with_working_copy(ctx, tenant, photo)
    broken = _with_working_copy(ctx, tenant, _photo("rocket", 3), working=b"P6\n12 12\n255\n")
    with ctx.session() as s:
        a, b = _load(s, [good, broken])
        images = prepare_images(ctx, s, [a, b], model_resize=RESIZE_SIZE)
        # The working copy as made (256 px centre square); no thumbnail made again.
        assert images[0].size == (256, 256)
        # An unreadable working copy is not fatal: the original decodes instead (draft size).
        assert min(images[1].size) >= 256 and images[1].size != (256, 256)
        assert "working copy" in caplog.text
        assert [r.role for r in a.assets].count("thumbnail") == 1
        # A model that needs more pixels than the working copy holds reads the original.
        bigger = prepare_images(ctx, s, [a], model_resize=320)
        assert min(bigger[0].size) >= 320
        # An item without its thumbnail gets one of the whole frame, not of the centre square.
        a.assets.remove(next(x for x in a.assets if x.role == "thumbnail"))
        a.phash = None
        (again,) = prepare_images(ctx, s, [a], model_resize=RESIZE_SIZE)
        thumb = next(x for x in a.assets if x.role == "thumbnail")
        assert (thumb.width, thumb.height) == (256, 171) and again.size != (256, 256)
        assert a.phash is not None


@pytest.mark.models
def test_working_copy_gives_the_tags_of_the_original(models_dir: Path) -> None:
    from shared.inference.registry import ModelRegistry
    from workers.tagging.image import ImageTagger

    tagger = ModelRegistry(models_dir, threads=1).get("image_tagger", ImageTagger)
    for name in ("chelsea", "coffee", "rocket", "astronaut"):
        data = _jpeg(_photo(name, 3))
        decoded, _ = decode_image(data, min_size=256)
        working = make_renditions(
            decoded, working_size=256, thumbnail_size=256, thumbnail_format="jpeg"
        ).files[0]
        copy, _ = decode_image(working.data)
        direct, via_copy = tagger.predict([decoded, copy])
        assert float(direct.embedding @ via_copy.embedding) > 0.99
        assert direct.labels[0][0] == via_copy.labels[0][0]


@pytest.mark.parametrize(
    "size", [(640, 424), (424, 640), (257, 256), (256, 257), (1919, 1278), (300, 3), (3, 300)]
)
def test_thumbnail_is_pillows_thumbnail_without_the_copy(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0] * size[1])
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    before = im.tobytes()
    reference = im.copy()
    reference.thumbnail((256, 256), Image.Resampling.BILINEAR, reducing_gap=1.0)
    got = thumbnail(im, 256)
    assert got.size == reference.size
    assert got.tobytes() == reference.tobytes()
    assert im.tobytes() == before, "the source image must not change"


def test_thumbnail_of_a_small_image_is_the_image() -> None:
    im = Image.new("RGB", (200, 120), (10, 20, 30))
    assert thumbnail(im, 256).size == (200, 120)
