"""Validating an uploaded image from its spooled file, before anything is stored."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from services.gateway.errors import Invalid, UnsupportedMedia
from shared.imaging import decode_opened

ALLOWED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}


SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


def _looks_like_allowed(f: BinaryIO) -> bool:
    f.seek(0)
    head = f.read(16)
    f.seek(0)
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return webp or any(head.startswith(sig) for sig in SIGNATURES)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mime_type: str
    width: int
    height: int


def read_image(f: BinaryIO, *, max_pixels: int, min_size: int) -> tuple[ImageInfo, Image.Image]:
    """Sniff the real type from the bytes, check the pixel budget, then decode (catching damage).

    The pixel check comes before any decoding so a decompression bomb is refused for the cost
    of reading its header. The decode is the one this upload gets: JPEGs decode in draft mode
    at the smallest DCT scale that keeps both sides >= ``min_size`` (every entropy-coded byte
    is still read, so truncation is still caught), and the caller makes the renditions from the
    returned RGB image, EXIF orientation applied.
    """
    f.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(f)
        except UnidentifiedImageError as exc:
            if _looks_like_allowed(f):
                raise Invalid(
                    "the file starts like an image we accept but cannot be decoded",
                    code="corrupt_image",
                ) from exc
            raise UnsupportedMedia(
                "the file is not an image we accept; send JPEG, PNG, WebP or GIF",
                details={"allowed": sorted(ALLOWED_FORMATS.values())},
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Invalid(f"image rejected as a decompression bomb: {exc}") from exc
        except OSError as exc:
            raise Invalid(f"the image cannot be read: {exc}", code="corrupt_image") from exc
        if im.format not in ALLOWED_FORMATS:
            raise UnsupportedMedia(
                f"{im.format} images are not accepted; send JPEG, PNG, WebP or GIF",
                details={"allowed": sorted(ALLOWED_FORMATS.values())},
            )
        width, height = im.size
        if width < 1 or height < 1:
            raise Invalid("the image has no pixels", code="corrupt_image")
        if width * height > max_pixels:
            raise Invalid(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                code="too_many_pixels",
            )
        fmt = im.format
        try:
            image, (width, height) = decode_opened(im, min_size=min_size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Invalid(f"image rejected as a decompression bomb: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise Invalid(
                f"the image is truncated or corrupt: {exc}", code="corrupt_image"
            ) from exc
    f.seek(0)
    info = ImageInfo(format=fmt, mime_type=ALLOWED_FORMATS[fmt], width=width, height=height)
    return info, image
