"""Image decoding as TFDS's `Image` / `Video` features need it: PNG with 8- and 16-bit samples (grey, grey+alpha,
RGB, RGBA), and whatever else Pillow reads (JPEG).

Pillow decodes 8-bit PNGs and 16-bit grey PNGs exactly and fast, but it turns 16-bit colour PNGs into 8-bit without a
warning (it keeps the high byte of each sample). MOVi's `normal` and `object_coordinates` are 16-bit RGB PNGs, so
those go through `decode_images`'s own path. `check_png` first checks every byte libpng would read (chunk layout and
CRCs, IHDR, the IDAT stream inflating to exactly the image's rows, filter types 0-4); only then does libpng decode the
rows, through torchvision's `decode_png`: exact, and with the check about 3x faster than NumPy, but any error libpng
meets (a bad CRC, corrupt image data) crashes the process, so it is only ever handed a PNG that has passed the check.

Where torchvision's image extension did not load, `unfilter` undoes the five PNG row filters in NumPy instead, and
the tests hold libpng's output to it. Undoing the filters is sequential along a row (Sub, Average and Paeth predict
from the reconstructed left neighbour) and down the image (Up, Average, Paeth from the row above). Every filter reads
only the left, upper and upper-left neighbours, so all pixels on one anti-diagonal (row + column = d) are independent
given the earlier diagonals: the reconstruction walks the H + W - 1 diagonals, each a handful of NumPy operations over
all its pixels, all channels and every frame of a video at once, instead of a Python loop over pixels.
"""

import struct
import warnings
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
    8-bit images, uint16 for 16-bit PNGs. Decoded with Pillow where it is exact (8-bit; 16-bit grey PNGs); 16-bit
    colour PNGs are checked by `check_png`, then decoded by libpng (torchvision) or, without it, by `unfilter`."""
    if not frames:
        return []
    if not all(frame[:8] == PNG_SIGNATURE for frame in frames):
        return _stack([_decode_pillow(frame) for frame in frames])
    headers = [png_header(frame) for frame in frames]
    if len(set(headers)) > 1:
        return [image for frame in frames for image in decode_images([frame])]
    height, width, bit_depth, colour_type, interlace = headers[0]
    if bit_depth == 16 and colour_type != 0:
        return _decode_own(frames, height, width, colour_type, interlace)
    return _stack([_decode_pillow(frame) for frame in frames])


def _stack(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    return np.stack(images) if len({(image.shape, image.dtype) for image in images}) == 1 else images


def _decode_own(frames, height, width, colour_type, interlace) -> np.ndarray:
    checked = [check_png(frame, height, width, colour_type, interlace) for frame in frames]
    channels = CHANNELS[colour_type]
    decode_png = _libpng()
    if decode_png is not None:
        import torch

        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image decoders for TorchCodec's; once they are gone, `_libpng` is None.
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
            decoded = [decode_png(torch.frombuffer(png, dtype=torch.uint8)) for png, _ in checked]  # (C, H, W)
        return np.stack([image.permute(1, 2, 0).numpy() for image in decoded])
    filtered = np.stack([np.frombuffer(rows, np.uint8).reshape(height, -1) for _, rows in checked])
    raw = unfilter(filtered, bytes_per_pixel=channels * 2)
    return raw.view(">u2").astype(np.uint16).reshape(len(frames), height, width, channels)


@lru_cache(maxsize=1)
def _libpng():
    """torchvision's `decode_png`, or None where it cannot serve: before torchvision 0.21 (no 16-bit output), or
    without its image extension (torchvision then only warns and leaves its image operators out; one built for
    another torch fails on import with a RuntimeError)."""
    try:
        import torch
        import torchvision
        from torchvision.io import decode_png
    except (ImportError, RuntimeError):
        return None
    version = tuple(int(part) for part in torchvision.__version__.split(".")[:2])
    return decode_png if version >= (0, 21) and hasattr(torch.ops.image, "decode_png") else None


# libpng's default limit on width and height; it also keeps the expected image data within what zlib can count.
MAX_SIDE = 1_000_000
# The IDAT chunk size libpng writes (and so reads from every version: some refuse chunks much larger than the image).
IDAT_SIZE = 8192


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


IEND_CHUNK = _chunk(b"IEND", b"")


def check_png(data: bytes, height: int, width: int, colour_type: int, interlace: int) -> tuple[bytearray, bytes]:
    """Check a PNG with 16-bit samples (`png_header`'s values given) as a strict decoder reads it:
    IHDR first and valid, every chunk whole with a correct CRC, no unknown critical chunk, the IDAT chunks consecutive
    and followed by IEND, their zlib stream complete and inflating to exactly the image's rows, each row's filter
    type 0-4. Returns the PNG to hand libpng, laid out as libpng writes one (IHDR, the zlib stream in IDAT chunks of
    8 KiB, IEND; the ancillary chunks, which libpng would interpret, left out), and the filtered rows
    (H * (1 + W * bytes per pixel) bytes)."""
    if colour_type not in CHANNELS:
        raise ImageError(f"colour type {colour_type} at 16 bits per sample is not supported here")
    if interlace:
        raise ImageError(f"interlace method {interlace} is not supported (only non-interlaced PNGs are)")
    sides_valid = 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE
    if data[8:12] != b"\0\0\0\x0d" or data[26:28] != b"\0\0" or not sides_valid:
        raise ImageError(f"its IHDR chunk is invalid (not 13 bytes, an unknown compression or filter method, or "
                         f"{width} x {height} pixels: 1 to {MAX_SIDE:,} each)")  # fmt: skip
    idat, kinds, offset = [], [], 8
    while kinds[-1:] != [b"IEND"]:
        if offset + 12 > len(data):
            raise ImageError(f"it ends at byte {len(data)} without an IEND chunk (truncated?)")
        (length,) = struct.unpack_from(">I", data, offset)
        kind, end = data[offset + 4 : offset + 8], offset + 12 + length
        name = kind.decode("ascii", "backslashreplace")
        if end > len(data) or zlib.crc32(data[offset + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            raise ImageError(f"the '{name}' chunk at byte {offset} is truncated or fails its CRC")
        if (kind == b"IHDR" and kinds) or (kind == b"IDAT" and b"IDAT" in kinds and kinds[-1] != b"IDAT"):
            raise ImageError(f"the '{name}' chunk at byte {offset} is out of place")
        if not kind[0] & 0x20 and kind not in (b"IHDR", b"PLTE", b"IDAT", b"IEND"):
            raise ImageError(f"it has an unknown critical chunk '{name}' at byte {offset}")
        if kind == b"IDAT":
            idat.append(data[offset + 8 : end - 4])
        kinds.append(kind)
        offset = end
    if not idat:
        raise ImageError("it has no IDAT chunk")
    stride = 1 + width * CHANNELS[colour_type] * 2
    stream, inflater = b"".join(idat), zlib.decompressobj()  # a 32 KiB window, whatever the zlib header declares
    try:
        rows = inflater.decompress(stream, height * stride + 1)
    except zlib.error as error:
        raise ImageError(f"its image data does not inflate ({error})") from error
    if len(rows) > height * stride:
        raise ImageError(f"its image data inflate to more than {height} rows of {stride} bytes")
    if len(rows) < height * stride:
        unfinished = "" if inflater.eof else " (an unfinished zlib stream)"
        raise ImageError(f"its image data inflate to {len(rows)} bytes{unfinished}, not {height} rows of {stride}")
    if not inflater.eof or inflater.unused_data:
        raise ImageError(f"its zlib stream does not end right after the image's {height} rows of {stride} bytes")
    if max(rows[::stride]) > 4:
        row = next(index for index, kind in enumerate(rows[::stride]) if kind > 4)
        raise ImageError(f"row {row} has an unknown PNG filter type {rows[row * stride]}")
    # libpng inflates with the window the zlib header declares (and fails, crashing torchvision, on a stream reaching
    # back further than that), so it is handed the 32 KiB window checked here: the header's CINFO set to 7.
    flags = stream[1] & 0xE0
    stream = bytes([0x78, flags | (31 - (0x7800 | flags) % 31) % 31]) + stream[2:]
    chunks = [_chunk(b"IDAT", stream[start : start + IDAT_SIZE]) for start in range(0, len(stream), IDAT_SIZE)]
    return bytearray().join([PNG_SIGNATURE, data[8:33], *chunks, IEND_CHUNK]), rows


def unfilter(filtered: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
    """Undo the PNG row filters of `filtered` (N, H, 1 + W * bytes_per_pixel): each row's first byte is its filter
    type (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth; `check_png` refuses others). Returns the raw bytes
    (N, H, W * bytes_per_pixel), uint8."""
    count, height, stride = filtered.shape
    width = (stride - 1) // bytes_per_pixel
    types = filtered[:, :, 0]
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
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(BytesIO(data)) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("1", "L;1", "L;2", "L;4"):
                image = image.convert("L")
            array = np.asarray(image)
    except UnidentifiedImageError as error:  # its message names the in-memory file object, a new address each time
        raise ImageError("the image does not decode (its bytes begin no image format Pillow reads)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"the image does not decode ({error})") from error
    if array.dtype == np.int32:  # Pillow's "I" mode for 16-bit grey
        array = array.astype(np.uint16)
    elif array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.uint16 if array.dtype.itemsize > 1 else np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
