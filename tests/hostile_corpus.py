"""The hostile files corpus: uploads built to break a decoder, a parser or the memory bound.

Generated, not committed: ``python -m tests.hostile_corpus [DIR]`` writes it into DIR
(default ``tests/data/hostile/``, git-ignored), as ``tests/integration/test_hostile_files.py``
does before uploading each file. Every case says what the gateway may answer: a 4xx refusal,
or 202 and a job that ends succeeded or failed with a readable reason.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HOSTILE_DIR = Path(__file__).resolve().parent / "data" / "hostile"


@dataclass(frozen=True)
class Case:
    name: str  # file name written (and sent as the upload's file name)
    field: str  # "file": sent as the multipart file; "text": sent as the text field
    mime: str  # the Content-Type the client claims
    # Allowed answers: HTTP statuses; 202 means the job must end succeeded or failed readably.
    statuses: tuple[int, ...]
    make: Callable[[], bytes]


def _photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = np.random.default_rng(7)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    noise = rng.integers(0, 40, (size[1], size[0], 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _save(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 50_000) -> bytes:
    """A real PNG of side x side 1-bit pixels: ~300 kB that inflate to ~300 MB of rows."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def gif_many_frames(frames: int = 3000) -> bytes:
    rng = np.random.default_rng(3)
    images = [
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)) for _ in range(frames)
    ]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)


def gif_huge_canvas() -> bytes:
    """A 16x16 GIF whose logical screen claims 65535x65535."""
    data = bytearray(_save(Image.new("P", (16, 16)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def _jpeg_with_exif(exif_payload: bytes) -> bytes:
    """A JPEG with an APP1 segment holding ``exif_payload`` right after SOI."""
    plain = _save(_photo(), "JPEG", quality=85)
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif_payload) + 2) + exif_payload
    return plain[:2] + app1 + plain[2:]


def jpeg_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return _save(_photo(), "JPEG", quality=85, exif=exif.tobytes())


def jpeg_exif_garbage() -> bytes:
    # A TIFF header whose first IFD offset points far past the end, then noise.
    return _jpeg_with_exif(b"Exif\x00\x00MM\x00\x2a\x7f\xff\xff\xff" + bytes(range(256)) * 4)


def polyglot() -> bytes:
    """A valid JPEG with a ZIP archive appended: both programs read it."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload.html", "<script>alert(1)</script>")
    return _save(_photo(), "JPEG", quality=85) + buf.getvalue()


def _text(s: str) -> Callable[[], bytes]:
    return lambda: s.encode()


CASES: tuple[Case, ...] = (
    Case("truncated.jpg", "file", "image/jpeg", (422,),
         lambda: _save(_photo(), "JPEG", quality=90)[:3000]),
    Case("truncated.png", "file", "image/png", (422,),
         lambda: _save(_photo(), "PNG")[:5000]),
    Case("png-named.jpg", "file", "image/jpeg", (202,), lambda: _save(_photo(), "PNG")),
    Case("text-named.png", "file", "image/png", (415,),
         lambda: b"this is plain text pretending to be a PNG\n" * 20),
    Case("bomb-50000x50000.png", "file", "image/png", (422,), png_bomb),
    Case("frames-3000.gif", "file", "image/gif", (202,), gif_many_frames),
    Case("canvas-65535.gif", "file", "image/gif", (422,), gif_huge_canvas),
    Case("orientation-6.jpg", "file", "image/jpeg", (202,), lambda: jpeg_orientation(6)),
    Case("orientation-9999.jpg", "file", "image/jpeg", (202,), lambda: jpeg_orientation(9999)),
    Case("exif-garbage.jpg", "file", "image/jpeg", (202, 422), jpeg_exif_garbage),
    Case("polyglot-jpeg-zip.jpg", "file", "image/jpeg", (202,), polyglot),
    Case("zero-bytes.jpg", "file", "image/jpeg", (415, 422), lambda: b""),
    Case("invalid-utf8.txt", "text", "text/plain", (202, 422),
         lambda: b"caf\xc3 \xff\xfe broken \xed\xa0\x80 surrogate " * 50),
    # 413 from the text limit, or 422 from the multipart parser's own part-size bound.
    Case("one-word-10mb.txt", "text", "text/plain", (413, 422), lambda: b"buffalo " * 1_310_720),
    Case("rtl-override.txt", "text", "text/plain", (202,),
         _text("invoice \u202egpj.exe\u202c for the \u2067garden\u2069 party " * 20)),
)  # fmt: skip


def generate(out_dir: Path = HOSTILE_DIR) -> dict[str, Path]:
    """Write every case into ``out_dir`` (kept when already there) and return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for case in CASES:
        path = out_dir / case.name
        if not path.exists():
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(case.make())
            tmp.rename(path)
        paths[case.name] = path
    return paths


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HOSTILE_DIR).values():
        print(p, p.stat().st_size)
