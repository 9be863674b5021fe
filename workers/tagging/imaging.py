"""Image decoding, thumbnails and perceptual hashes (Pillow + imagehash)."""

from __future__ import annotations

import io
from typing import BinaryIO

import imagehash
from PIL import Image, ImageOps


def open_image(f: BinaryIO | bytes) -> Image.Image:
    """Decode fully (so corrupt data fails here), honour EXIF orientation, return RGB."""
    if isinstance(f, bytes):
        f = io.BytesIO(f)
    with Image.open(f) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        return to_rgb(im)


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


def thumbnail_webp(im: Image.Image, size: int) -> tuple[bytes, int, int]:
    thumb = im.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, format="WEBP", quality=80, method=4)
    return buf.getvalue(), thumb.width, thumb.height


def perceptual_hash(im: Image.Image) -> str:
    """64-bit DCT pHash as 16 hex characters."""
    return str(imagehash.phash(im, hash_size=8))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()
