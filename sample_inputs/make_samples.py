"""Rebuild the generated sample files: hourly_demand.csv, harbour.png and minilm_layer2_qkv.npz.

    .venv/bin/python sample_inputs/make_samples.py

Deterministic (fixed seeds), offline. The .txt samples are written by hand (see README.md).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_csv(path: Path) -> None:
    """Four weeks of hourly 'electricity demand' (MW): a daily double peak, a weekend dip, a slow drift, noise."""
    rng = np.random.default_rng(20240601)
    hours = np.arange(4 * 7 * 24)
    hour_of_day, day = hours % 24, hours // 24
    daily = 0.6 * np.exp(-((hour_of_day - 8.5) ** 2) / 6.0) + 0.9 * np.exp(-((hour_of_day - 18.5) ** 2) / 8.0)
    night = -0.5 * np.cos(2 * np.pi * hour_of_day / 24)
    weekend = np.where(day % 7 >= 5, -0.35, 0.0)
    drift = 0.1 * np.sin(2 * np.pi * hours / len(hours))
    demand = 50 + 10 * (daily + 0.3 * night + weekend + drift) + rng.normal(0, 0.6, len(hours))
    lines = ["hour,demand_mw"] + [f"{h},{v:.2f}" for h, v in zip(hours, demand)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_png(path: Path) -> None:
    """A 64×64 harbour scene drawn with PIL: sky gradient, sun, sea with stripes, a quay and a boat."""
    from PIL import Image, ImageDraw

    size = 64
    img = Image.new("RGB", (size, size))
    px = img.load()
    for y in range(size):
        for x in range(size):
            if y < 36:  # sky: light blue to pale orange near the horizon
                t = y / 36
                px[x, y] = (int(120 + 120 * t), int(170 + 50 * t), int(235 - 60 * t))
            else:  # sea: darker further down, with gentle horizontal stripes
                t = (y - 36) / 28
                wave = 12 * math.sin(x / 3.0 + y * 1.3) * (y % 4 == 0)
                px[x, y] = (int(30 + 20 * t + wave), int(90 - 30 * t + wave), int(150 - 40 * t + wave))
    draw = ImageDraw.Draw(img)
    draw.ellipse((40, 8, 54, 22), fill=(255, 220, 90))  # sun
    draw.rectangle((0, 30, 18, 40), fill=(120, 110, 100))  # quay
    draw.rectangle((4, 22, 9, 30), fill=(200, 60, 50))  # harbour-master's hut
    draw.polygon([(22, 46), (42, 46), (38, 51), (26, 51)], fill=(90, 50, 30))  # hull
    draw.line((32, 30, 32, 46), fill=(60, 40, 30), width=1)  # mast
    draw.polygon([(33, 31), (33, 45), (41, 45)], fill=(245, 245, 235))  # sail
    img.save(path, format="PNG", optimize=True)


def make_npz(path: Path) -> None:
    """q, k, v of heads 0–3 of layer 2 of all-MiniLM-L6-v2 on short_paragraph.txt, float32, with tokens."""
    sys.path.insert(0, str(HERE.parent))
    from xviz import inputs

    text = (HERE / "short_paragraph.txt").read_text(encoding="utf-8")
    seq = inputs.from_text(text, layer=2)
    heads = slice(0, 4)
    np.savez_compressed(
        path,
        q=seq.q[0, heads].numpy().astype(np.float32),
        k=seq.k[0, heads].numpy().astype(np.float32),
        v=seq.v[0, heads].numpy().astype(np.float32),
        tokens=np.array(seq.tokens, dtype=str),
    )


if __name__ == "__main__":
    make_csv(HERE / "hourly_demand.csv")
    make_png(HERE / "harbour.png")
    make_npz(HERE / "minilm_layer2_qkv.npz")
    for name in ("hourly_demand.csv", "harbour.png", "minilm_layer2_qkv.npz"):
        print(f"{name}: {(HERE / name).stat().st_size:,} bytes")
