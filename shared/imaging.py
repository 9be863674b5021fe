"""Image decoding, renditions and perceptual hashes (Pillow + imagehash).

An upload is decoded once, by the gateway (which must decode it anyway to refuse a corrupt
file), and what it decoded is kept as two renditions: the *working copy* the image tagger reads
(the centre square, its side scaled to ``working_copy_size``, the tagger's own resize step, so
the worker only crops it; uncompressed; deleted once tagged) and the *thumbnail*. The tagging
worker then reads ~200 KB of pixels instead of decoding and resizing a multi-megabyte original,
and spends its time in the model. It falls back to the original for images that arrive without a
working copy (generated images, re-tagging, items stored by older versions) or when a model
needs more pixels than the working copy holds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

import imagehash
import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = frozenset({5, 6, 7, 8})  # orientations that swap width and height


def decode_image(
    f: BinaryIO | bytes, *, min_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode once for tagging: ``(RGB image, original (width, height) as displayed)``.

    With ``min_size``, a JPEG decodes in draft mode: libjpeg scales by 1/2, 1/4 or 1/8 inside
    the DCT, to the smallest size that keeps both sides >= ``min_size``, so a 4000 px photo
    needed only as a 256 px thumbnail and a 224 px model input costs a fraction of a full
    decode. The original size comes from the header, before draft changes it. Corrupt data
    still fails here (every entropy-coded byte is read). Other formats decode fully.
    """
    if isinstance(f, bytes):
        f = io.BytesIO(f)
    # No ``with``: closing the image would invalidate it. The caller owns ``f``.
    return decode_opened(Image.open(f), min_size=min_size)


def decode_opened(
    im: Image.Image, *, min_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`decode_image` for an image whose header ``Image.open`` has already read."""
    orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    width, height = im.size
    if orientation in _TRANSPOSED:
        width, height = height, width
    if min_size and im.format == "JPEG":
        im.draft("RGB", (min_size, min_size))
    im.load()
    if orientation in range(2, 9):
        im = ImageOps.exif_transpose(im)
    return to_rgb(im), (width, height)


def open_image(f: BinaryIO | bytes) -> Image.Image:
    """Decode fully (so corrupt data fails here), honour EXIF orientation, return RGB."""
    return decode_image(f)[0]


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "P", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        arr = im.point(lambda v: v / 256).convert("L")
        return arr.convert("RGB")
    return im.convert("RGB")


def thumbnail(im: Image.Image, size: int) -> Image.Image:
    """``im`` fitted into a ``size`` square, as Pillow's ``Image.thumbnail`` makes it (the same
    size rounding, so the same pixels), without first copying the whole decoded frame, which
    ``thumbnail`` (in place) needs. ``im`` itself when it already fits; never modified."""
    fitted = _fit(im.size, size)
    if fitted is None:
        return im
    # reducing_gap 1: a box reduce by the integer factor, then bilinear (Pillow widens the
    # filter when it shrinks, so this is still antialiased). Half the time of Lanczos on these
    # machines, 41-42 dB PSNR to it on scikit-image photos: less than JPEG q80 changes anyway.
    return im.resize(fitted, Image.Resampling.BILINEAR, reducing_gap=1.0)


def _fit(image_size: tuple[int, int], size: int) -> tuple[int, int] | None:
    """The size ``Image.thumbnail((size, size))`` gives (Pillow 13's rounding: of floor and
    ceil, the one nearer the aspect ratio), or None when the image fits already."""
    w, h = image_size
    if size >= w and size >= h:
        return None
    aspect = w / h
    x = y = size
    if x / y >= aspect:
        x = max(
            min(math.floor(y * aspect), math.ceil(y * aspect), key=lambda n: abs(aspect - n / y)), 1
        )
    else:
        y = max(
            min(
                math.floor(x / aspect),
                math.ceil(x / aspect),
                key=lambda n: 0 if n == 0 else abs(aspect - x / n),
            ),
            1,
        )
    return x, y


def centre_square(im: Image.Image, size: int) -> Image.Image:
    """The centre square, its side scaled to ``size`` (bicubic; never up): what a tagger that
    resizes the shorter side to ``size`` and centre-crops can ever see. The box keeps its
    fractional offsets, as the tagger's own preprocessing does."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    if side <= size:
        left, top = round(left), round(top)
        return im.crop((left, top, left + side, top + side))
    return im.resize(
        (size, size),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )


ThumbnailFormat = Literal["jpeg", "webp"]
MIME_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp"}
WORKING_ROLE = "working"
WORKING_MIME = "image/x-portable-pixmap"


@dataclass(frozen=True)
class Rendition:
    role: str  # working | thumbnail
    data: bytes
    mime_type: str
    width: int
    height: int


@dataclass(frozen=True)
class Renditions:
    files: list[Rendition]
    phash: str


def encode(im: Image.Image, fmt: ThumbnailFormat) -> bytes:
    if fmt == "webp":
        return encode_webp(im)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def make_renditions(
    image: Image.Image,
    *,
    working_size: int | None,
    thumbnail_size: int,
    thumbnail_format: ThumbnailFormat,
) -> Renditions:
    """Working copy (unless ``working_size`` is None), thumbnail and pHash from one decode.

    The working copy is the centre square the tagger sees (:func:`centre_square`), uncompressed
    (PPM): any lossy step there changes tags, even JPEG at q95 (see docs/perf.md), and it is
    deleted once the image is tagged. The pHash comes from the thumbnail.
    """
    files = []
    if working_size:
        working = centre_square(image, working_size)
        buf = io.BytesIO()
        working.save(buf, format="PPM")
        files.append(Rendition(WORKING_ROLE, buf.getvalue(), WORKING_MIME, *working.size))
    thumb = thumbnail(image, thumbnail_size)
    files.append(
        Rendition("thumbnail", encode(thumb, thumbnail_format), MIME_TYPES[thumbnail_format],
                  *thumb.size)
    )  # fmt: skip
    return Renditions(files=files, phash=perceptual_hash(thumb))


def encode_webp(thumb: Image.Image) -> bytes:
    buf = io.BytesIO()
    # method 2: much faster than 4 (the old setting) for a few more bytes (see docs/perf.md).
    thumb.save(buf, format="WEBP", quality=80, method=2)
    return buf.getvalue()


def perceptual_hash(im: Image.Image) -> str:
    """64-bit DCT pHash as 16 hex characters."""
    return str(imagehash.phash(im, hash_size=8))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hash_array(hashes: Sequence[str]) -> np.ndarray:
    """16-hex-digit pHashes as uint64, for :func:`hamming_many`."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def hamming_many(a: str, hashes: np.ndarray) -> np.ndarray:
    """Hamming distance from ``a`` to each of ``hashes`` (from :func:`hash_array`), vectorised:
    a tenant can hold hundreds of thousands of images, too many for a Python loop per item."""
    return _popcount(hashes ^ np.uint64(int(a, 16)))


def _popcount_bytes(x: np.ndarray) -> np.ndarray:
    counts: np.ndarray = np.unpackbits(x.view(np.uint8)).reshape(len(x), 64).sum(axis=1)
    return counts


# np.bitwise_count is numpy >= 2.0; the project still allows 1.26.
_popcount = getattr(np, "bitwise_count", _popcount_bytes)
