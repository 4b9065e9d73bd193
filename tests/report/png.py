"""A small PNG reader (8-bit RGB or RGBA, not interlaced, as Chromium writes screenshots), so
the report's browser test can look at the pixels without an imaging library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # colour type: RGB, RGBA


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    to_left, to_up, to_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if to_left <= to_up and to_left <= to_up_left:
        return left
    return up if to_up <= to_up_left else up_left


def _unfilter(kind: int, row: bytearray, previous: bytes, bpp: int) -> None:
    """Undo one scanline's filter in place (PNG specification, section 9)."""
    if kind == 0:
        return
    if kind == 2:  # Up
        row[:] = (
            ((np.frombuffer(row, np.uint8) + np.frombuffer(previous, np.uint8)) & 255)
            .astype(np.uint8)
            .tobytes()
        )
        return
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 1:  # Sub
            row[i] = (row[i] + left) & 255
        elif kind == 3:  # Average
            row[i] = (row[i] + ((left + up) >> 1)) & 255
        elif kind == 4:  # Paeth
            up_left = previous[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + _paeth(left, up, up_left)) & 255
        else:
            raise ValueError(f"unknown PNG filter {kind}")


def read_png(path: Path) -> NDArray[np.uint8]:
    """The image's pixels as an array of shape (height, width, channels)."""
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    position, compressed = len(SIGNATURE), bytearray()
    width = height = channels = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in CHANNELS or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
            channels = CHANNELS[colour]
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    raw = zlib.decompress(bytes(compressed))
    stride = width * channels
    previous = bytes(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        row = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], row, previous, channels)
        rows.append(bytes(row))
        previous = rows[-1]
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, channels)
