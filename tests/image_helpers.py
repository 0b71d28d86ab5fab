"""Test images made here: encoded files, hand-built PNG headers (bombs, 16-bit), ICC profiles, cutouts."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw


def encoded(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def raw_png(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, rows: bytes = b"") -> bytes:
    """A PNG written by hand: any declared size, any pixel data (none at all for a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


SRGB_COLORANTS_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def matrix_icc_profile(
    name: str, colorants: tuple[tuple[float, float, float], ...] = SRGB_COLORANTS_D50, gamma: float = 2.2
) -> bytes:
    """An ICC v2 RGB display profile (matrix + gamma curves). Swap the colorants to get a profile whose red is
    sRGB's green: converting it to sRGB must then move colours, which proves the conversion ran."""
    ascii_name = name.encode("ascii")
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_name) + 1) + ascii_name + b"\0" + b"\0" * 8 + b"\0" * 3
    desc += b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", _xyz(colorants[0])),
        (b"gXYZ", _xyz(colorants[1])),
        (b"bXYZ", _xyz(colorants[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0no copyright\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + b"".join(_s15(v) for v in (0.9642, 1.0, 0.8249))
        + b"\0" * 48
    )
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + data


def cutout(
    size: tuple[int, int] = (300, 400),
    box: tuple[int, int, int, int] = (60, 40, 240, 360),
    colour: tuple[int, int, int] = (200, 40, 30),
) -> Image.Image:
    """A product cutout: an opaque shape with a two-tone pattern on a clear background, anti-aliased edge."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle(box, radius=25, fill=(*colour, 255))
    left, top, right, bottom = box
    draw.rectangle((left + 20, top + 30, right - 20, top + 60), fill=(240, 230, 60, 255))
    # A soft rim: partly transparent pixels at the edge, as real cutouts have.
    draw.rounded_rectangle((left - 2, top - 2, right + 2, bottom + 2), radius=27, outline=(*colour, 120), width=2)
    return image
