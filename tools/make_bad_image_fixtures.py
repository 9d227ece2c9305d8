#!/usr/bin/env python3
"""Writes the image fixtures of tests/it/bad_images.rs that Rust's `image` crate cannot encode:
a CMYK JPEG, a progressive JPEG, an EXIF-rotated JPEG (orientation 6: stored 40x20, shown
20x40, left half red as stored) and a 30000x30000 PNG "decompression bomb" header (a valid
IHDR and a tiny IDAT; it would need 2.7 GB decoded). Needs Pillow.

usage: tools/make_bad_image_fixtures.py tests/fixtures/bad_images
"""
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)

cmyk = Image.new("CMYK", (24, 16), (0, 255, 255, 0))  # red in CMYK
cmyk.save(out / "cat.cmyk.jpg", "JPEG", quality=90)

grad = Image.new("RGB", (32, 24))
grad.putdata([(x * 8, y * 10, 128) for y in range(24) for x in range(32)])
grad.save(out / "dog.progressive.jpg", "JPEG", quality=90, progressive=True)

stored = Image.new("RGB", (40, 20), (0, 0, 255))
stored.paste((255, 0, 0), (0, 0, 20, 20))
exif = Image.Exif()
exif[0x0112] = 6  # Orientation: rotate 90 CW to display
stored.save(out / "cat.exif_rotated.jpg", "JPEG", quality=95, exif=exif.tobytes())


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
(out / "dog.bomb.png").write_bytes(bomb)
