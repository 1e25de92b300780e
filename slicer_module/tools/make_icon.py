"""Draw the DinoMix module icon (128x128 RGBA PNG) with numpy + zlib only.

Run from the repository root: ``python slicer_module/tools/make_icon.py`` rewrites
``slicer_module/DinoMix/Resources/Icons/DinoMix.png``. The picture: an axial CT-like disc with organ blobs in
the module's organ colours (liver, stomach, spleen, kidneys, aorta, IVC) and two small adrenal dots, the
minority organs DINO-Mix cares about.
"""

import os
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "DinoMix"))
from DinoMixLib.labelmap import organ_color  # noqa: E402

SIZE = 128


def png_bytes(rgba: np.ndarray) -> bytes:
    h, w, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def draw() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    img = np.zeros((SIZE, SIZE, 4), dtype=np.float64)

    def ellipse(cx, cy, rx, ry):
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0

    def paint(mask, rgb, alpha=255):
        img[mask, :3] = rgb
        img[mask, 3] = alpha

    # body outline and soft tissue (grey, like a CT axial slice)
    paint(ellipse(64, 66, 60, 48), (70, 70, 74))
    paint(ellipse(64, 66, 56, 44), (118, 112, 108))
    # organs (image left = patient right, radiological convention)
    paint(ellipse(40, 58, 24, 20), organ_color("liver"))
    paint(ellipse(82, 50, 17, 12), organ_color("stomach"))
    paint(ellipse(100, 68, 10, 13), organ_color("spleen"))
    paint(ellipse(42, 86, 9, 12), organ_color("right kidney"))
    paint(ellipse(88, 88, 9, 12), organ_color("left kidney"))
    paint(ellipse(67, 84, 6, 6), organ_color("aorta"))
    paint(ellipse(55, 80, 5, 4), organ_color("inferior vena cava"))
    paint(ellipse(70, 66, 13, 4), organ_color("pancreas"))
    paint(ellipse(50, 72, 3, 3), organ_color("right adrenal gland"))
    paint(ellipse(80, 74, 3, 3), organ_color("left adrenal gland"))
    # vertebra
    paint(ellipse(64, 100, 9, 7), (235, 235, 225))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


if __name__ == "__main__":
    out = os.path.join(HERE, "..", "DinoMix", "Resources", "Icons", "DinoMix.png")
    with open(out, "wb") as f:
        f.write(png_bytes(draw()))
    print(os.path.abspath(out))
