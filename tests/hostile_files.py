"""Hostile files made in a second or two: a pixel bomb, a huge table, a zip of many entries, a lying zip."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(path: Path, side: int) -> Path:
    """A real, decodable grey PNG of side x side black pixels. Its compressed rows are made once
    per 1,000 and repeated (each block ends with a full flush, so copies are valid deflate): a
    30000 x 30000 picture takes under a megabyte and a second to write."""
    rows_per_block = min(side, 1000)
    block_raw = bytes((side + 1) * rows_per_block)  # filter byte 0 + zero pixels, per row
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(block_raw) + c.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(side, rows_per_block)
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block_raw, adler)
    tail_raw = bytes((side + 1) * rest)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = end.compress(tail_raw) + end.flush(zlib.Z_FINISH)
    adler = zlib.adler32(tail_raw, adler)
    idat = b"\x78\xda" + block * blocks + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def big_table(path: Path, rows: int, row: bytes = b"a short text,x\n") -> Path:
    """A text table of `rows` identical short rows (written in 10 MB pieces)."""
    per = max(1, (10 * 1024**2) // len(row))
    piece = row * per
    with path.open("wb") as f:
        f.write(b"text,label\n")
        done = 0
        while done < rows:
            n = min(per, rows - done)
            f.write(piece if n == per else row * n)
            done += n
    return path


def many_entry_zip(path: Path, entries: int) -> Path:
    """A valid zip of `entries` empty stored files (cat/0.png ...), packed by hand: zipfile takes far longer."""
    local, central, offset = [], [], 0
    for i in range(entries):
        name = f"cat/{i}.png".encode()
        head = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0,
                                   offset) + name)
        local.append(head)
        offset += len(head)
    cd = b"".join(central)
    entries16 = min(entries, 0xFFFF)
    data = b"".join(local)
    if entries <= 0xFFFF:
        eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries16, entries16, len(cd), len(data), 0)
        path.write_bytes(data + cd + eocd)
        return path
    z64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(cd), len(data))
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(data) + len(cd), 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(data + cd + z64 + loc + eocd)
    return path


def declare_size(path: Path, name: str, size: int) -> None:
    """Make the zip lie: `name`'s local and central records declare `size` unpacked bytes."""
    import zipfile

    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
        pos = z.start_dir
        for other in z.infolist():
            n, m, k = struct.unpack("<HHH", raw[pos + 28: pos + 34])
            if other.filename == name:
                raw[pos + 24: pos + 28] = struct.pack("<L", size)
            pos += 46 + n + m + k
    raw[info.header_offset + 22: info.header_offset + 26] = struct.pack("<L", size)
    path.write_bytes(bytes(raw))
