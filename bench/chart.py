"""A horizontal bar chart as a PNG, written with zlib alone (no plotting dependency).

Text uses a built-in 5x7 pixel font (with descenders) (lower case, digits, a little punctuation), drawn at 2x.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_FONT_ROWS = {
    "a": ".....|.....|.###.|....#|.####|#...#|.####",
    "b": "#....|#....|#.##.|##..#|#...#|#...#|####.",
    "c": ".....|.....|.###.|#....|#....|#...#|.###.",
    "d": "....#|....#|.##.#|#..##|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.",
    "f": "..##.|.#..#|.#...|###..|.#...|.#...|.#...",
    "g": ".....|.....|.####|#...#|#...#|.####|....#|.###.",
    "h": "#....|#....|#.##.|##..#|#...#|#...#|#...#",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.",
    "j": "...#.|.....|..##.|...#.|...#.|...#.|#..#.|.##..",
    "k": "#....|#....|#..#.|#.#..|##...|#.#..|#..#.",
    "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#...#|#...#",
    "n": ".....|.....|#.##.|##..#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.",
    "p": ".....|.....|####.|#...#|#...#|####.|#....|#....",
    "q": ".....|.....|.####|#...#|#...#|.####|....#|....#",
    "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.###.|#....|.###.|....#|####.",
    "t": ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#",
    "v": ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
    "w": ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.",
    "x": ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
    "y": ".....|.....|#...#|#...#|#...#|.####|....#|.###.",
    "z": ".....|.....|#####|...#.|..#..|.#...|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    " ": ".....|.....|.....|.....|.....|.....|.....",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "-": ".....|.....|.....|#####|.....|.....|.....",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "=": ".....|.....|#####|.....|#####|.....|.....",
    "<": "...#.|..#..|.#...|#....|.#...|..#..|...#.",
    ">": ".#...|..#..|...#.|....#|...#.|..#..|.#...",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
}
_FONT = {c: [r for r in rows.split("|")] for c, rows in _FONT_ROWS.items()}
SCALE = 2
CHAR_W = 6 * SCALE  # 5 pixels and a space
CHAR_H = 8 * SCALE  # 7 rows and a descender row (g, j, p, q, y)

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (20, 20, 20)
GREY: Color = (150, 150, 150)
LIGHT: Color = (225, 225, 225)
GREEN: Color = (60, 150, 80)
RED: Color = (200, 60, 50)
NEUTRAL: Color = (120, 140, 170)


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(WHITE * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, x0), min(self.w, x1)
        y0, y1 = max(0, y0), min(self.h, y1)
        if x1 <= x0:
            return
        line = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i : i + len(line)] = line

    def vline(self, x: int, y0: int, y1: int, color: Color, dash: int = 0) -> None:
        for y in range(y0, y1):
            if not dash or (y // dash) % 2 == 0:
                self.rect(x, y, x + 2, y + 1, color)

    def text(self, x: int, y: int, s: str, color: Color = BLACK) -> None:
        for ch in s.lower():
            glyph = _FONT.get(ch, _FONT["?"])
            for r, row in enumerate(glyph):
                for c, bit in enumerate(row):
                    if bit == "#":
                        self.rect(x + c * SCALE, y + r * SCALE, x + (c + 1) * SCALE,
                                  y + (r + 1) * SCALE, color)  # fmt: skip
            x += CHAR_W

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.px[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            )

        ihdr = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # a ratio: 1.0 is parity (or exactly on target)
    limit: float | None  # the target for this bar: green at or under, red above; None: grey


@dataclass(frozen=True)
class Group:
    title: str
    bars: Sequence[Bar]


def bar_chart(title: str, groups: Sequence[Group], path: Path, width: int = 1100) -> None:
    """Bars of ratios, one group per section; a grey line at 1.0, a dashed red one at each
    bar's limit."""
    row, pad = 26, 16
    label_w = (max(len(b.label) for g in groups for b in g.bars) + 2) * CHAR_W if groups else 0
    height = pad + CHAR_H + pad
    for g in groups:
        height += CHAR_H + 10 + row * len(g.bars) + pad
    height += CHAR_H + pad
    c = Canvas(width, height)
    x0, x1 = pad + label_w, width - pad - 8 * CHAR_W

    def xpos(v: float, top: float) -> int:
        return x0 + int((x1 - x0) * min(v, top) / top)

    c.text(pad, pad, title)
    y = pad + CHAR_H + pad
    for g in groups:
        # Each group has its own scale: engine ratios sit near 1, socket ones can be far off.
        values = [b.value for b in g.bars if b.value == b.value]
        limits = [b.limit * 1.1 for b in g.bars if b.limit is not None]
        top = max([1.2, *limits, *values]) * 1.05
        c.text(pad, y, g.title, GREY)
        y += CHAR_H + 10
        y_start = y
        labels = []
        for b in g.bars:
            c.rect(x0, y + 2, x1, y + row - 2, LIGHT)
            c.text(pad, y + (row - CHAR_H) // 2, b.label)
            if b.value == b.value:  # not NaN
                color = NEUTRAL if b.limit is None else GREEN if b.value <= b.limit else RED
                c.rect(x0, y + 4, xpos(b.value, top), y + row - 4, color)
                labels.append((xpos(b.value, top) + 6, y + (row - CHAR_H) // 2, f"{b.value:.2f}x"))
            else:
                labels.append((x0 + 6, y + (row - CHAR_H) // 2, "n/a"))
            if b.limit is not None:
                c.vline(xpos(b.limit, top), y, y + row, RED, dash=4)
            y += row
        c.vline(xpos(1.0, top), y_start, y, BLACK)
        for x, ty, text in labels:  # on top of the lines, on a white ground
            c.rect(x - 2, ty - 2, x + len(text) * CHAR_W, ty + CHAR_H, WHITE)
            c.text(x, ty, text)
        y += pad
    c.text(
        pad,
        y,
        "black line: 1.0    red dashes: target    green: met    red: missed    grey: no target",
        GREY,
    )
    path.write_bytes(c.png())
