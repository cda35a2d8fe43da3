"""16-bit colour PNGs (`slotssm_hf.data.images`): libpng, through torchvision's `decode_png`, only ever sees a PNG
that `check_png` has checked, and gives the arrays written, as the NumPy `unfilter` does. A catalogue of PNGs, valid
but unusual or malformed, is decoded by both in a child process, so that a crash fails a test rather than ending the
run: a valid one gives the image written, and damaged deflate data that still inflates gives the same pixels through
both; a malformed one gives an `ImageError` naming what is wrong, or the image written where the damage is outside
what is decoded; never a crash, another exception or other pixels."""

import json
import pickle
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from repository import REPO
from tfds_writer import dict_json, example, feature_bytes, image_json, png_bytes, write_tfds_folder

from slotssm_hf.data import images
from slotssm_hf.data.images import check_png, decode_images
from slotssm_hf.data.tfds import TFDSFolder, TFDSFormatError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAME = np.random.default_rng(0).integers(0, 65536, (5, 6, 3)).astype(np.uint16)
PLAIN = png_bytes(FRAME)  # one IDAT chunk; rows filtered 0, 1, 2, 3, 4
IHDR = struct.pack(">IIBBBBB", 6, 5, 16, 2, 0, 0, 0)
STRIDE = 1 + 6 * 6


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a well-formed PNG."""
    found, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        found.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return found


ROWS = zlib.decompress(dict(chunks(PLAIN))[b"IDAT"])  # the filtered rows, each led by its filter type


def png(*middle: bytes, ihdr: bytes = IHDR, end: bytes = chunk(b"IEND", b"")) -> bytes:
    """A PNG: the signature, IHDR (`ihdr` as its body), the `middle` chunks, then `end`."""
    return SIGNATURE + chunk(b"IHDR", ihdr) + b"".join(middle) + end


def idat(rows: bytes = ROWS) -> bytes:
    return chunk(b"IDAT", zlib.compress(rows))


def split_idat(parts: int = 3, stream: bytes = zlib.compress(ROWS)) -> list[bytes]:
    """`stream` cut into `parts` consecutive IDAT chunks, as libpng writes a large image."""
    size = -(-len(stream) // parts)
    return [chunk(b"IDAT", stream[start : start + size]) for start in range(0, len(stream), size)]


def deflated(rows: bytes = ROWS, level: int = 6, window: int = 15, strategy: int = zlib.Z_DEFAULT_STRATEGY,
             flush_every: int = 0) -> bytes:  # fmt: skip
    """`rows` as a zlib stream from `zlib.compressobj`, with a Z_SYNC_FLUSH (an empty stored block) every
    `flush_every` bytes of input if given."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, window, 9, strategy)
    step = flush_every or len(rows)
    parts = [compressor.compress(rows[start : start + step]) + compressor.flush(zlib.Z_SYNC_FLUSH)
             for start in range(0, len(rows), step)]  # fmt: skip
    return b"".join(parts) + compressor.flush()


def with_window(stream: bytes, cinfo: int) -> bytes:
    """`stream` with its zlib header declaring a window of 2 ** (cinfo + 8) bytes (FCHECK made right)."""
    flags = stream[1] & 0xE0
    cmf = cinfo << 4 | 8
    return bytes([cmf, flags | (31 - (cmf << 8 | flags) % 31) % 31]) + stream[2:]


def with_row_filter(row: int, kind: int) -> bytes:
    return ROWS[: row * STRIDE] + bytes([kind]) + ROWS[row * STRIDE + 1 :]


def recrc(data: bytes) -> bytes:
    """`data` with the CRC of every chunk that lies whole in it recomputed: damage that only a deeper check finds."""
    data, offset = bytearray(data), 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        if offset + 12 + length > len(data):
            break
        struct.pack_into(">I", data, offset + 8 + length, zlib.crc32(data[offset + 4 : offset + 8 + length]))
        offset += 12 + length
    return bytes(data)


# Malformed PNGs and what their ImageError must say.
NAMED = {
    "empty": (b"", "does not decode"),
    "a cut signature": (PLAIN[:5], "does not decode"),
    "no IEND": (png(idat(), end=b""), "ends at byte .* without an IEND chunk"),
    "cut inside IDAT": (PLAIN[:60], r"the 'IDAT' chunk at byte 33 is truncated or fails its CRC"),
    "an IDAT CRC wrong": (PLAIN[:-13] + bytes([PLAIN[-13] ^ 1]) + PLAIN[-12:], "'IDAT' chunk at byte 33 is truncated"),
    "a chunk length of 2**32 - 1": (png(b"\xff\xff\xff\xffIDAT" + bytes(8)), "'IDAT' chunk at byte 33 is truncated"),
    "width 0": (png(idat(), ihdr=struct.pack(">IIBBBBB", 0, 5, 16, 2, 0, 0, 0)), "IHDR chunk is invalid"),
    "width 2**31 - 1": (png(idat(), ihdr=struct.pack(">IIBBBBB", 2**31 - 1, 5, 16, 2, 0, 0, 0)),
                        "IHDR chunk is invalid"),
    "100000 x 100000 pixels": (png(idat(), ihdr=struct.pack(">IIBBBBB", 10**5, 10**5, 16, 2, 0, 0, 0)),
                               r"inflate to 185 bytes, not 100000 rows of 600001"),
    "compression method 1": (png(idat(), ihdr=IHDR[:10] + b"\x01" + IHDR[11:]), "IHDR chunk is invalid"),
    "filter method 1": (png(idat(), ihdr=IHDR[:11] + b"\x01" + IHDR[12:]), "IHDR chunk is invalid"),
    "an IHDR of 14 bytes": (png(idat(), ihdr=IHDR + b"\0"), "IHDR chunk is invalid"),
    "Adam7 interlacing": (png(idat(), ihdr=IHDR[:12] + b"\x01"), "interlace method 1 is not supported"),
    "interlace method 2": (png(idat(), ihdr=IHDR[:12] + b"\x02"), "interlace method 2 is not supported"),
    "a 16-bit palette": (png(idat(), ihdr=IHDR[:9] + b"\x03" + IHDR[10:]), "colour type 3 at 16 bits"),
    "colour type 5": (png(idat(), ihdr=IHDR[:9] + b"\x05" + IHDR[10:]), "colour type 5 at 16 bits"),
    "IHDR twice": (png(chunk(b"IHDR", IHDR), idat()), "'IHDR' chunk at byte 33 is out of place"),
    "IDAT chunks apart": (png(*split_idat()[:2], chunk(b"tEXt", b"a\0b"), split_idat()[2]), "'IDAT' .* out of place"),
    "an unknown critical chunk": (png(chunk(b"ABCD", b"x"), idat()), "unknown critical chunk 'ABCD' at byte 33"),
    "no IDAT": (png(), "no IDAT chunk"),
    "a row short": (png(idat(ROWS[:-STRIDE])), "inflate to 148 bytes, not 5 rows of 37"),
    "a row too many": (png(idat(ROWS + ROWS[-STRIDE:])), "inflate to more than 5 rows of 37 bytes"),
    "a cut zlib stream": (png(chunk(b"IDAT", zlib.compress(ROWS)[:60])), r"\(an unfinished zlib stream\)"),
    "no zlib checksum": (png(chunk(b"IDAT", zlib.compress(ROWS)[:-4])), "zlib stream does not end right after"),
    "bytes after the zlib stream": (png(chunk(b"IDAT", zlib.compress(ROWS) + b"\0")), "does not end right after"),
    "a wrong zlib checksum": (png(chunk(b"IDAT", zlib.compress(ROWS)[:-1] + b"\0")), "does not inflate"),
    "not zlib": (png(chunk(b"IDAT", b"\xff" * 40)), "does not inflate"),
    "filter type 5": (png(idat(with_row_filter(2, 5))), "row 2 has an unknown PNG filter type 5"),
    "filter type 255": (png(idat(with_row_filter(4, 255))), "row 4 has an unknown PNG filter type 255"),
    # 100 MB of zeros in 100 kB: refused after inflating one byte more than the image, not all 100 MB.
    "a zlib bomb": (png(chunk(b"IDAT", zlib.compress(bytes(10**8), 9))), "inflate to more than 5 rows of 37 bytes"),
}


# 32 x 64 pixels whose rows repeat every 4 rows (1540 bytes): deflate reaches back 1540 bytes for them.
TILED = np.tile(np.random.default_rng(1).integers(0, 65536, (4, 64, 3)).astype(np.uint16), (8, 1, 1))
TILED_IHDR = struct.pack(">IIBBBBB", 64, 32, 16, 2, 0, 0, 0)
TILED_ROWS = zlib.decompress(dict(chunks(png_bytes(TILED, (0,))))[b"IDAT"])

# Valid PNGs laid out or compressed unusually, and the image each holds.
VALID = {
    "ancillary chunks, split IDAT, bytes after IEND": (png(
        chunk(b"gAMA", b"\0\0\xb1\x8f"), chunk(b"PLTE", bytes(6)), chunk(b"tEXt", b"Software\0x"), *split_idat(),
        chunk(b"tIME", bytes(7))) + b"trailing", FRAME),
    "one-byte IDAT chunks": (png(*split_idat(len(zlib.compress(ROWS)))), FRAME),
    "empty IDAT chunks": (png(chunk(b"IDAT", b""), *split_idat(2), chunk(b"IDAT", b"")), FRAME),
    "stored blocks (level 0)": (png(chunk(b"IDAT", deflated(level=0))), FRAME),
    "level 9": (png(chunk(b"IDAT", deflated(level=9))), FRAME),
    "Huffman codes only": (png(chunk(b"IDAT", deflated(strategy=zlib.Z_HUFFMAN_ONLY))), FRAME),
    "fixed Huffman codes": (png(chunk(b"IDAT", deflated(strategy=zlib.Z_FIXED))), FRAME),
    "run lengths only": (png(chunk(b"IDAT", deflated(strategy=zlib.Z_RLE))), FRAME),
    "empty stored blocks (sync flushes)": (png(chunk(b"IDAT", deflated(flush_every=16))), FRAME),
    "a 512-byte window": (png(chunk(b"IDAT", deflated(TILED_ROWS, window=9)), ihdr=TILED_IHDR), TILED),
    # Reaching back 1540 bytes past a declared 256-byte window: zlib with a 32 KiB window inflates it; libpng, which
    # inflates with the declared window, fails on it (and that crashes torchvision) unless handed a 32 KiB header.
    "distances beyond the declared window": (
        png(chunk(b"IDAT", with_window(deflated(TILED_ROWS), 0)), ihdr=TILED_IHDR), TILED),
}


def sweeps() -> dict[str, bytes]:
    """PLAIN and a split-IDAT PNG cut at every byte, each byte flipped (CRCs then fail), and each byte flipped with
    every CRC made right again."""
    cases = {}
    for label, data in (("plain", PLAIN), ("split", png(*split_idat()))):
        for index in range(len(data)):
            cases[f"{label} cut to {index} bytes"] = data[:index]
            for bit in (0x01, 0x80):
                flipped = data[:index] + bytes([data[index] ^ bit]) + data[index + 1 :]
                cases[f"{label} byte {index} ^ {bit:#x}"] = flipped
                cases[f"{label} byte {index} ^ {bit:#x}, CRCs right"] = recrc(flipped)
    return cases


def damaged_deflate(count: int = 300) -> dict[str, bytes]:
    """PNGs whose deflate data has a bit flipped and yet inflates to a whole image (the zlib checksum made right):
    valid, unusual streams of other pixels, on which libpng and NumPy must agree."""
    sources = [(ihdr, rows, zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy))
               for ihdr, rows in ((IHDR, ROWS), (TILED_IHDR, TILED_ROWS))
               for level, strategy in ((6, zlib.Z_DEFAULT_STRATEGY), (1, zlib.Z_FIXED), (6, zlib.Z_HUFFMAN_ONLY))]
    sources = [(ihdr, rows, compressor.compress(rows) + compressor.flush()) for ihdr, rows, compressor in sources]
    generator, cases = np.random.default_rng(2), {}
    while len(cases) < count:
        ihdr, rows, stream = sources[len(cases) % len(sources)]
        damaged = bytearray(stream)
        damaged[generator.integers(len(damaged))] ^= 1 << int(generator.integers(8))
        inflater = zlib.decompressobj(-15)
        try:
            inflated = inflater.decompress(bytes(damaged), len(rows) + 1)
        except zlib.error:
            continue
        if inflater.eof and len(inflated) == len(rows):
            body = bytes(damaged[: len(damaged) - len(inflater.unused_data)])
            zlib_stream = b"\x78\x9c" + body + struct.pack(">I", zlib.adler32(inflated))
            cases[f"damaged deflate data {len(cases)}"] = png(chunk(b"IDAT", zlib_stream), ihdr=ihdr)
    return cases


CHILD = """
import hashlib, json, pickle, sys
import numpy as np
from slotssm_hf.data import images

cases = pickle.load(open(sys.argv[1], "rb"))
libpng, outcomes = images._libpng, {}
for name, (data, image) in cases.items():
    print(name, file=sys.stderr, flush=True)  # the last name printed is the one that crashed
    outcome = []
    for path in (libpng, lambda: None):  # libpng, then the NumPy fallback
        images._libpng = path
        try:
            decoded = images.decode_images([data])
            same = np.array_equal(decoded, image[None])
            outcome.append("the image written" if same else f"other pixels {hashlib.sha1(decoded).hexdigest()}")
        except Exception as error:
            outcome.append(f"{type(error).__name__}: {error}")
    outcomes[name] = outcome
json.dump(outcomes, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{case: [outcome through libpng, outcome through NumPy]} from one child process, or a failure naming the case
    that crashed it."""
    folder = tmp_path_factory.mktemp("pngs")
    cases = {**VALID, **{name: (data, FRAME) for name, (data, _) in NAMED.items()},
             **{name: (data, FRAME) for name, data in {**sweeps(), **damaged_deflate()}.items()}}  # fmt: skip
    (folder / "cases.pkl").write_bytes(pickle.dumps(cases))
    command = [sys.executable, "-c", CHILD, str(folder / "cases.pkl"), str(folder / "outcomes.json")]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line in cases][-1:] or ["?"]
        pytest.fail(f"the child died (status {done.returncode}) decoding {last[0]!r}: {done.stderr[-300:]}")
    return json.loads((folder / "outcomes.json").read_text())


@pytest.fixture(params=["libpng", "numpy"])
def decoder(request, monkeypatch):
    """Either path of 16-bit colour PNGs after `check_png`: libpng (torchvision), or the NumPy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(images, "_libpng", lambda: None)
    return request.param


def test_torchvision_from_0_21_provides_libpng():
    torchvision = pytest.importorskip("torchvision")
    if tuple(int(part) for part in torchvision.__version__.split(".")[:2]) < (0, 21):
        pytest.skip("torchvision before 0.21 decodes no 16-bit PNGs: the NumPy path serves")
    assert images._libpng() is not None


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (4, 4, 2, 1, 0, 3)])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_pngs_decode_to_the_arrays_written(decoder, channels, filters):
    frames = np.random.default_rng(channels).integers(0, 65536, (3, 9, 7, channels)).astype(np.uint16)
    decoded = decode_images([png_bytes(frame, filters) for frame in frames])
    assert decoded.dtype == np.uint16 and decoded.flags.c_contiguous and np.array_equal(decoded, frames)


@pytest.mark.parametrize("name", list(VALID))
def test_an_unusual_but_valid_png_gives_the_image_written(outcomes, name):
    assert outcomes[name] == ["the image written", "the image written"]


def test_libpng_is_handed_ihdr_the_stream_in_8_kib_idat_chunks_with_a_32_kib_window_and_iend():
    stream = with_window(deflated(TILED_ROWS, level=0), 0)  # stored blocks: 12 kB
    data = png(chunk(b"tEXt", b"a\0b"), *split_idat(7, stream), chunk(b"tIME", bytes(7)), ihdr=TILED_IHDR) + b"x"
    checked, rows = check_png(data, 32, 64, 2, 0)
    layout = chunks(bytes(checked))
    assert [(kind, len(body)) for kind, body in layout] == [(b"IHDR", 13), (b"IDAT", 8192),
                                                             (b"IDAT", len(stream) - 8192), (b"IEND", 0)]  # fmt: skip
    assert layout[0][1] == TILED_IHDR and layout[1][1] + layout[2][1] == with_window(stream, 7)
    assert rows == TILED_ROWS


@pytest.mark.parametrize("name", list(NAMED))
def test_a_malformed_png_is_an_image_error_naming_what_is_wrong(outcomes, name):
    _, message = NAMED[name]
    through_libpng, through_numpy = outcomes[name]
    assert through_libpng.startswith("ImageError: ") and through_libpng == through_numpy
    assert re.search(message, through_libpng), through_libpng


def test_no_malformed_png_crashes_or_gives_other_pixels_or_another_error(outcomes):
    malformed = {**NAMED, **sweeps()}
    bad = {name: outcomes[name] for name in malformed
           if not all(o == "the image written" or o.startswith("ImageError: ") for o in outcomes[name])}  # fmt: skip
    assert not bad, f"{len(bad)} of {len(malformed)} cases, e.g. {list(bad.items())[:3]}"


def test_libpng_and_numpy_agree_on_damaged_deflate_data_that_still_inflates(outcomes):
    through_libpng, through_numpy = zip(*(outcomes[name] for name in damaged_deflate()))
    assert through_libpng == through_numpy
    assert all(o.startswith(("other pixels ", "the image written", "ImageError: ")) for o in through_libpng)
    assert sum(o.startswith("other pixels ") for o in through_libpng) > 200  # mostly decoded, not refused


def test_a_malformed_png_in_a_tfds_folder_is_an_error_naming_the_file_the_feature_and_what_is_wrong(tmp_path):
    record = example({"normal": feature_bytes([NAMED["a row short"][0]])})
    write_tfds_folder(tmp_path, "x", dict_json({"normal": image_json([5, 6, 3], "uint16")}), {"train": [[record]]})
    with pytest.raises(TFDSFormatError, match=r"x-train\.tfrecord-00000-of-00001: record at byte 0, feature 'normal' "
                                              r"\(Image\): its image data inflate to 148 bytes"):  # fmt: skip
        list(TFDSFolder(tmp_path).examples("train"))
