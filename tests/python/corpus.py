"""Every kind of JPEG and PNG a user's folder may hold, written with Pillow (and pypng for
interlaced PNGs, libjpeg-turbo's `cjpeg` where installed): the corpus of
`decode_corpus.py` (which lists what it holds) and of the Python package's checks
(`check_package.py`). `generate(DIR)` writes it; names are `cat.N.KIND.EXT` / `dog.N.KIND.EXT`,
`bad-*` kinds being files no decoder should use.
"""
import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

root = Path(__file__).resolve().parents[2]


def photo(w: int, h: int, seed: int) -> Image.Image:
    """A shipped photo enlarged to w x h, with seeded texture: real content, every block busy."""
    photos = sorted((root / "data" / "cats_dogs").glob("*.png"))
    base = np.asarray(Image.open(photos[seed % len(photos)]).convert("RGB").resize((w, h), Image.BICUBIC), np.float32)
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base += 14 * np.sin(xx * 0.21 + yy * 0.07 * rng.rand())[..., None] + rng.normal(0, 5, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def exif_with_orientation(o: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def insert_segment(jpeg: bytes, marker: int, payload: bytes, length: int | None = None) -> bytes:
    """`jpeg` with one more marker segment after SOI; `length` may lie about its size."""
    n = len(payload) + 2 if length is None else length
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", n) + payload + jpeg[2:]


def png_chunk(kind: bytes, data: bytes, crc_ok: bool = True) -> bytes:
    crc = zlib.crc32(kind + data) ^ (0 if crc_ok else 1)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def generate(out: Path) -> None:
    import png  # pypng: Pillow cannot write interlaced PNGs

    out.mkdir(parents=True, exist_ok=True)
    n = [0]

    def save(kind: str, data: bytes, ext: str) -> None:
        cls = "cat" if n[0] % 2 == 0 else "dog"
        (out / f"{cls}.{n[0]}.{kind}.{ext}").write_bytes(data)
        n[0] += 1

    def jpeg(img: Image.Image, **opts) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", **opts)
        return buf.getvalue()

    def pillow_png(img: Image.Image, **opts) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "PNG", **opts)
        return buf.getvalue()

    rgb = photo(160, 120, 1)
    for sub in ("4:4:4", "4:2:2", "4:2:0", "4:1:1"):
        save(f"jpeg-{sub.replace(':', '')}", jpeg(rgb, quality=90, subsampling=sub), "jpg")
    save("jpeg-progressive", jpeg(rgb, quality=85, progressive=True), "jpg")
    save("jpeg-optimized", jpeg(rgb, quality=85, optimize=True), "jpg")
    save("jpeg-restart", jpeg(rgb, quality=85, restart_marker_blocks=4), "jpg")
    save("jpeg-restart-rows", jpeg(photo(150, 110, 2), quality=85, restart_marker_rows=1), "jpg")
    save("jpeg-odd-size", jpeg(photo(97, 61, 3), quality=90), "jpg")
    save("jpeg-gray", jpeg(rgb.convert("L"), quality=90), "jpg")
    save("jpeg-gray-progressive", jpeg(photo(100, 90, 4).convert("L"), quality=90, progressive=True), "jpg")
    save("jpeg-cmyk", jpeg(photo(120, 100, 5).convert("CMYK"), quality=90), "jpg")
    save("jpeg-q100", jpeg(rgb, quality=100, subsampling=0), "jpg")
    save("jpeg-q10", jpeg(rgb, quality=10), "jpg")
    for o in range(1, 9):
        save(f"jpeg-exif-orientation-{o}", jpeg(photo(128, 72, 6 + o), quality=90, exif=exif_with_orientation(o)), "jpg")
    base = jpeg(rgb, quality=90)
    save("jpeg-broken-exif", insert_segment(base, 0xE1, b"Exif\0\0II*\0" + b"\xff" * 20), "jpg")
    icc = ImageOps.__dict__.get("_icc") or None
    try:
        from PIL import ImageCms

        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except Exception:
        icc = None
    if icc:
        save("jpeg-icc", jpeg(rgb, quality=90, icc_profile=icc), "jpg")
    save("jpeg-comment", jpeg(rgb, quality=90, comment=b"made by decode_corpus.py"), "jpg")
    save("jpeg-app5", insert_segment(base, 0xE5, b"vendor data" * 10), "jpg")
    # Adobe's APP14 is 12 bytes of payload; a short one (seen in real files) is malformed
    # but skippable: Pillow and OpenCV decode the image.
    save("jpeg-short-app14", insert_segment(base, 0xEE, b"Adobe\0d"), "jpg")
    save("jpeg-empty-app14", insert_segment(base, 0xEE, b""), "jpg")
    save("jpeg-empty-com", insert_segment(base, 0xFE, b""), "jpg")
    save("jpeg-trailing-garbage", base + b"\x00junk after EOI" * 4, "jpg")
    # Arithmetic coding (libjpeg-turbo's cjpeg writes it; Pillow reads it): refused by name.
    if shutil.which("cjpeg"):
        ppm = out.parent / "source.ppm"
        rgb.save(ppm)
        arith = subprocess.run(["cjpeg", "-arithmetic", str(ppm)], capture_output=True, check=True).stdout
        save("jpeg-arithmetic", arith, "jpg")
        # What Pillow does not write: 4:4:0, 4:1:1 across, mixed factors, RGB without the
        # YCbCr transform, the float DCT, a restart every MCU.
        for kind, opts in [
            ("cjpeg-440", ["-sample", "1x2"]),
            ("cjpeg-411h", ["-sample", "4x1"]),
            ("cjpeg-mixed-factors", ["-sample", "2x2,2x1,1x2"]),
            ("cjpeg-rgb", ["-rgb"]),
            ("cjpeg-rgb-progressive", ["-rgb", "-progressive"]),
            ("cjpeg-float-dct", ["-dct", "float"]),
            ("cjpeg-restart-1", ["-restart", "1B"]),
        ]:
            data = subprocess.run(["cjpeg", *opts, str(ppm)], capture_output=True, check=True).stdout
            save(kind, data, "jpg")

    save("png-rgb", pillow_png(rgb), "png")
    save("png-rgba", pillow_png(photo(90, 70, 20).convert("RGBA")), "png")
    la = photo(90, 70, 21).convert("LA")
    save("png-gray-alpha", pillow_png(la), "png")
    save("png-gray", pillow_png(photo(90, 70, 22).convert("L")), "png")
    pal = photo(90, 70, 23).convert("P", palette=Image.ADAPTIVE, colors=200)
    save("png-palette", pillow_png(pal), "png")
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    save("png-palette-trns", pillow_png(pal_t, transparency=3), "png")
    for bits in (1, 2, 4):
        p = photo(90, 70, 24 + bits).convert("P", palette=Image.ADAPTIVE, colors=2**bits)
        save(f"png-palette-{bits}bit", pillow_png(p, bits=bits), "png")
    save("png-bilevel", pillow_png(photo(90, 70, 30).convert("1")), "png")
    img16 = (np.asarray(photo(80, 60, 31), np.uint16) * 257 + np.arange(80)[None, :, None]).astype(np.uint16)
    buf = io.BytesIO()
    png.Writer(80, 60, greyscale=False, bitdepth=16).write(buf, img16.reshape(60, -1).tolist())
    save("png-16bit-rgb", buf.getvalue(), "png")
    gray16 = img16[..., 0]
    buf = io.BytesIO()
    png.Writer(80, 60, greyscale=True, bitdepth=16).write(buf, gray16.tolist())
    save("png-16bit-gray", buf.getvalue(), "png")
    rgba16 = np.concatenate([img16, np.full((60, 80, 1), 40000, np.uint16)], axis=2)
    buf = io.BytesIO()
    png.Writer(80, 60, greyscale=False, alpha=True, bitdepth=16).write(buf, rgba16.reshape(60, -1).tolist())
    save("png-16bit-rgba", buf.getvalue(), "png")
    for bits, arr in ((8, np.asarray(photo(77, 53, 32))), (16, img16[:53, :77])):
        buf = io.BytesIO()
        png.Writer(arr.shape[1], arr.shape[0], greyscale=False, bitdepth=bits, interlace=True).write(
            buf, arr.reshape(arr.shape[0], -1).tolist()
        )
        save(f"png-interlaced-{bits}bit", buf.getvalue(), "png")
    frames = [photo(64, 48, 40 + i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=100)
    save("png-apng", buf.getvalue(), "png")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by decode_corpus.py")
    save("png-text", pillow_png(rgb, pnginfo=info), "png")
    if icc:
        save("png-iccp", pillow_png(rgb, icc_profile=icc), "png")
    save("png-gamma", pillow_png(rgb)[:33] + png_chunk(b"gAMA", struct.pack(">I", 45455)) + pillow_png(rgb)[33:], "png")

    # What no decoder should use: each must be refused with a readable reason.
    save("bad-truncated-jpeg", base[: len(base) // 2], "jpg")
    good_png = pillow_png(rgb)
    save("bad-truncated-png", good_png[: len(good_png) // 2], "png")
    idat = good_png.index(b"IDAT") - 4
    length = struct.unpack(">I", good_png[idat : idat + 4])[0]
    damaged = bytearray(good_png)
    damaged[idat + 8 + length // 2] ^= 0x55
    save("bad-png-crc", bytes(damaged), "png")
    # Only the IDAT's CRC wrong, its data intact: Pillow reads it (it checks no IDAT CRC).
    idat_crc = bytearray(good_png)
    idat_crc[idat + 8 + length] ^= 0x01
    save("png-idat-crc-only", bytes(idat_crc), "png")
    ihdr_crc = bytearray(good_png)
    ihdr_crc[29] ^= 0xFF
    save("bad-png-ihdr-crc", bytes(ihdr_crc), "png")
    save("bad-png-unknown-critical", good_png[:33] + png_chunk(b"ABCD", b"xyz") + good_png[33:], "png")
    no_idat = good_png[:33] + png_chunk(b"IEND", b"")
    save("bad-png-no-idat", no_idat, "png")
    bad_zlib = good_png[:33] + png_chunk(b"IDAT", b"\x78\x9c\xff\xff\xff\xff" * 4) + png_chunk(b"IEND", b"")
    save("bad-png-zlib", bad_zlib, "png")
    save("bad-png-header-only", good_png[:8], "png")
    save("bad-jpeg-header-only", base[:2], "jpg")
    bad_sof = bytearray(base)
    sof = bytes(base).index(b"\xff\xc0")
    bad_sof[sof + 5 : sof + 9] = b"\x00\x00\x00\x00"
    save("bad-jpeg-zero-size", bytes(bad_sof), "jpg")
    save("bad-jpeg-no-scan", base[: bytes(base).index(b"\xff\xda")] + b"\xff\xd9", "jpg")
    save("bad-empty", b"", "jpg")
    save("bad-text", b"this is not an image\n" * 10, "jpg")
