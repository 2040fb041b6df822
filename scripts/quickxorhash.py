#!/usr/bin/env python3
"""A second quickXorHash, written from the algorithm as Microsoft's C# QuickXorHash, rclone
(backend/onedrive/quickxorhash) and abraunegg/onedrive describe it, and deliberately shaped like
them rather than like src/quickxor.rs: three 64-bit cells (the last holding 32 bits), each input
byte shifted into the cell at the running bit offset and spilled into the next cell (or round to
the first) when it straddles a boundary; the length XORed into the last 8 bytes at the end.

Usage: quickxorhash.py FILE...   prints "HASH  FILE" per file (base64, as OneDrive shows it).
The test `drive::quickxor_matches_a_second_implementation` runs it on random files."""

import base64
import sys

WIDTH = 160  # bits in the register
SHIFT = 11  # bits the offset moves per input byte
CELLS = (WIDTH - 1) // 64 + 1  # 3
LAST_BITS = WIDTH - 64 * (CELLS - 1)  # bits in the last cell: 32
MASK64 = (1 << 64) - 1


class QuickXorHash:
    def __init__(self):
        self.cells = [0] * CELLS
        self.shift_so_far = 0  # bit offset of the next byte
        self.length = 0

    def update(self, data: bytes):
        cell = self.shift_so_far // 64
        offset = self.shift_so_far % 64
        for b in data:
            last = cell == CELLS - 1
            bits = LAST_BITS if last else 64
            if offset <= bits - 8:
                self.cells[cell] ^= (b << offset) & MASK64
            else:
                spill = 0 if last else cell + 1
                self.cells[cell] ^= (b << offset) & MASK64
                self.cells[spill] ^= b >> (bits - offset)
            offset += SHIFT
            while offset >= bits:
                cell = 0 if last else cell + 1
                offset -= bits
                last = cell == CELLS - 1
                bits = LAST_BITS if last else 64
        self.shift_so_far = (self.shift_so_far + SHIFT * (len(data) % WIDTH)) % WIDTH
        self.length += len(data)

    def digest(self) -> bytes:
        out = bytearray()
        for c in self.cells[:-1]:
            out += c.to_bytes(8, "little")
        out += (self.cells[-1] & ((1 << LAST_BITS) - 1)).to_bytes(LAST_BITS // 8, "little")
        for i, lb in enumerate(self.length.to_bytes(8, "little")):
            out[WIDTH // 8 - 8 + i] ^= lb
        return bytes(out)

    def b64(self) -> str:
        return base64.b64encode(self.digest()).decode()


def of_file(path: str) -> str:
    h = QuickXorHash()
    with open(path, "rb") as f:
        while True:
            piece = f.read(1 << 20)
            if not piece:
                break
            h.update(piece)
    return h.b64()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    for p in sys.argv[1:]:
        print(f"{of_file(p)}  {p}")
