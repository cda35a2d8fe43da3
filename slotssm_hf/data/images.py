"""Image decoding as TFDS's `Image` / `Video` features need it: PNG with 8- and 16-bit samples (grey, grey+alpha,
RGB, RGBA), and whatever else Pillow reads (JPEG).

Pillow decodes 8-bit PNGs and 16-bit grey PNGs exactly and fast, but it turns 16-bit colour PNGs into 8-bit without a
warning (it keeps the high byte of each sample). MOVi's `normal` and `object_coordinates` are 16-bit RGB PNGs, so
those go through `decode_images`'s own path: the IDAT stream inflated with `zlib` and the five PNG row filters
undone in NumPy.

Undoing the filters is sequential along a row (Sub, Average and Paeth predict from the reconstructed left neighbour)
and down the image (Up, Average, Paeth from the row above). Every filter reads only the left, upper and upper-left
neighbours, so all pixels on one anti-diagonal (row + column = d) are independent given the earlier diagonals: the
reconstruction walks the H + W - 1 diagonals, each a handful of NumPy operations over all its pixels, all channels and
every frame of a video at once, instead of a Python loop over pixels.
"""

import struct
import zlib
from functools import lru_cache
from io import BytesIO

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> samples per pixel (3, the palette type, is left to Pillow)
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


class ImageError(ValueError):
    """An image this module cannot decode (corrupt, or of a kind it does not handle); the message says which."""


def png_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(height, width, bit depth, colour type, interlace method) from a PNG's IHDR chunk."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise ImageError("not a PNG (no PNG signature followed by an IHDR chunk)")
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return height, width, bit_depth, colour_type, interlace


def decode_images(frames: list[bytes]) -> np.ndarray | list[np.ndarray]:
    """Encoded frames as one array (N, H, W, C) when they share a shape, else a list of (H, W, C) arrays: uint8 for
    8-bit images, uint16 for 16-bit PNGs. Decoded with Pillow where it is exact (8-bit; 16-bit grey PNGs) and with
    `unfilter` for 16-bit colour PNGs."""
    if not frames:
        return []
    if not all(frame[:8] == PNG_SIGNATURE for frame in frames):
        return _stack([_decode_pillow(frame) for frame in frames])
    headers = [png_header(frame) for frame in frames]
    if len(set(headers)) > 1:
        return [image for frame in frames for image in decode_images([frame])]
    height, width, bit_depth, colour_type, interlace = headers[0]
    if bit_depth == 16 and colour_type != 0:
        return _decode_own(frames, height, width, bit_depth, colour_type, interlace)
    return _stack([_decode_pillow(frame) for frame in frames])


def _stack(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    return np.stack(images) if len({(image.shape, image.dtype) for image in images}) == 1 else images


def _decode_own(frames, height, width, bit_depth, colour_type, interlace) -> np.ndarray:
    filtered = np.stack([_inflate(frame, height, width, bit_depth, colour_type, interlace) for frame in frames])
    channels = CHANNELS[colour_type]
    raw = unfilter(filtered, bytes_per_pixel=channels * bit_depth // 8)
    if bit_depth == 16:
        return raw.view(">u2").astype(np.uint16).reshape(len(frames), height, width, channels)
    return raw.reshape(len(frames), height, width, channels)


def _inflate(data: bytes, height: int, width: int, bit_depth: int, colour_type: int, interlace: int) -> np.ndarray:
    """The filtered scanlines (H, 1 + W * bytes per pixel) of a non-interlaced PNG with whole-byte samples."""
    if colour_type not in CHANNELS or bit_depth not in (8, 16):
        raise ImageError(f"colour type {colour_type} at {bit_depth} bits per sample is not supported here")
    if interlace:
        raise ImageError("interlaced (Adam7) PNGs are not supported")
    idat, offset = [], 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length] or b"\0\0\0\0")
        if len(body) < length or zlib.crc32(kind + body) != crc:
            raise ImageError(f"the {kind.decode('latin-1')} chunk at byte {offset} is truncated or fails its CRC")
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        offset += 12 + length
    try:
        stream = zlib.decompress(b"".join(idat))
    except zlib.error as error:
        raise ImageError(f"the image data does not inflate ({error})") from error
    stride = 1 + width * CHANNELS[colour_type] * bit_depth // 8
    if len(stream) != height * stride:
        raise ImageError(f"the image data holds {len(stream)} bytes, not {height} rows of {stride}")
    return np.frombuffer(stream, np.uint8).reshape(height, stride)


def unfilter(filtered: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
    """Undo the PNG row filters of `filtered` (N, H, 1 + W * bytes_per_pixel): each row's first byte is its filter
    type (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth). Returns the raw bytes (N, H, W * bytes_per_pixel), uint8."""
    count, height, stride = filtered.shape
    width = (stride - 1) // bytes_per_pixel
    types = filtered[:, :, 0]
    if types.max(initial=0) > 4:
        raise ImageError(f"unknown PNG filter type {int(types.max())}")
    if not types.any():
        return filtered[:, :, 1:].copy()
    # Pixels first, frames and channels last: each diagonal gathers contiguous blocks of every frame's channels.
    values = filtered[:, :, 1:].reshape(count, height, width * bytes_per_pixel).transpose(1, 2, 0)
    values = values.reshape(height, width, bytes_per_pixel, count).reshape(height, width, -1).astype(np.int16)
    kinds = np.repeat(types.T[:, None, None, :], bytes_per_pixel, axis=2).reshape(height, 1, -1)
    # Reconstructed bytes with a zero row above and a zero column to the left: the neighbours outside the image.
    out = np.zeros((height + 1, width + 1, bytes_per_pixel * count), np.int16)
    for rows, cols in _diagonals(height, width):
        left, up, upper_left = out[rows + 1, cols], out[rows, cols + 1], out[rows, cols]
        kind = kinds[rows, 0]
        # Paeth: the neighbour closest to left + up - upper_left, ties to left, then up.
        to_left, to_up = np.abs(up - upper_left), np.abs(left - upper_left)
        to_corner = np.abs(left + up - 2 * upper_left)
        paeth = np.where(to_up <= to_corner, up, upper_left)
        paeth = np.where((to_left <= to_up) & (to_left <= to_corner), left, paeth)
        predicted = np.where(kind == 4, paeth, np.where(kind == 3, (left + up) >> 1, np.where(kind == 2, up, left)))
        predicted[kind == 0] = 0
        out[rows + 1, cols + 1] = (values[rows, cols] + predicted) & 0xFF
    raw = out[1:, 1:].reshape(height, width, bytes_per_pixel, count).transpose(3, 0, 1, 2)
    return np.ascontiguousarray(raw, np.uint8).reshape(count, height, width * bytes_per_pixel)


@lru_cache(maxsize=16)
def _diagonals(height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, columns) of the pixels on each anti-diagonal, in order."""
    diagonals = []
    for diagonal in range(height + width - 1):
        rows = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        diagonals.append((rows, diagonal - rows))
    return diagonals


def _decode_pillow(data: bytes) -> np.ndarray:
    """(H, W, C) of an 8-bit image (a palette expanded to RGB or RGBA) or of a 16-bit grey PNG."""
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("1", "L;1", "L;2", "L;4"):
                image = image.convert("L")
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"the image does not decode ({error})") from error
    if array.dtype == np.int32:  # Pillow's "I" mode for 16-bit grey
        array = array.astype(np.uint16)
    elif array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.uint16 if array.dtype.itemsize > 1 else np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
