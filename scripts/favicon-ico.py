#!/usr/bin/env python3
"""Writes static/favicon.ico: the lotus of static/favicon.svg drawn again as a 32x32 icon.

The ICO holds one 32-bit BMP image (with its alpha channel and the AND mask a BMP icon
carries), the form every browser and operating system reads. The shapes are the SVG's, as
ellipses and a line, sampled 4x4 per pixel for smooth edges. No dependency beyond Python.

    python3 scripts/favicon-ico.py   # from the repository root
"""
import math
import struct

SIZE, SUB = 32, 4
PLUM, CREAM, PETAL = (0x5B, 0x21, 0x50), (0xFB, 0xF7, 0xF2), (0xF0, 0xD9, 0xC4)


def ellipse(cx, cy, rx, ry, angle_deg):
    a = math.radians(angle_deg)
    cos, sin = math.cos(a), math.sin(a)

    def inside(x, y):
        dx, dy = x - cx, y - cy
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1

    return inside


# Painted in order; the last shape that covers a point gives its colour.
SHAPES = [
    (lambda x, y: (x - 16) ** 2 + (y - 16) ** 2 <= 15**2, PLUM),
    (ellipse(12.2, 17.2, 2.4, 5.6, -45), PETAL),
    (ellipse(19.8, 17.2, 2.4, 5.6, 45), PETAL),
    (ellipse(16, 14.5, 2.7, 7.4, 0), CREAM),
    (lambda x, y: 9 <= x <= 23 and abs(y - 23.5) <= 0.75, CREAM),
]


def pixel(px, py):
    total, rgb = 0, [0, 0, 0]
    for sy in range(SUB):
        for sx in range(SUB):
            x, y = px + (sx + 0.5) / SUB, py + (sy + 0.5) / SUB
            colour = None
            for inside, c in SHAPES:
                if inside(x, y):
                    colour = c
            if colour:
                total += 1
                rgb = [a + b for a, b in zip(rgb, colour)]
    if total == 0:
        return (0, 0, 0, 0)
    return tuple(round(c / total) for c in rgb) + (round(255 * total / SUB**2),)


def main():
    rows = []
    for py in reversed(range(SIZE)):  # BMP rows go bottom up
        row = b""
        for px in range(SIZE):
            r, g, b, a = pixel(px, py)
            row += bytes((b, g, r, a))
        rows.append(row)
    pixels = b"".join(rows)
    mask = b"\0" * (SIZE * SIZE // 8)  # the alpha channel decides; the mask shows all
    header = struct.pack("<IiiHHIIiiII", 40, SIZE, SIZE * 2, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image = header + pixels + mask
    icondir = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", SIZE, SIZE, 0, 0, 1, 32, len(image), 6 + 16)
    with open("static/favicon.ico", "wb") as f:
        f.write(icondir + entry + image)


if __name__ == "__main__":
    main()
