"""Synthetic ABID-like bins for offline demos and tests.

Each photo looks into a fabric bin from the front, as ABID's cameras do: fabric rims with bin
labels above and below, side walls and floor in perspective, 0..N products (boxes, books, pouches,
bottles, blister packs) standing or piled, and bands of elastic strands across the opening.

Every image is drawn from its own RNG seeded by (seed, index), so the bytes written depend only on
the seed and the index, never on how many worker processes share the work.
"""
from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from binventory import BinventoryError
from binventory.files import atomic_write_bytes
from binventory.data.abid import (BinRecord, check_image_id, image_key, metadata_key,
                                  record_to_json)
from binventory.data.provenance import mark_synthetic
from binventory.data.synth_products import colour, make_skus, shade, sku_record

MAX_ITEMS = 40      # more items than this cannot all stay countable in the smaller images
MIN_VISIBLE = 0.45  # share of each item left clear of other items, rims and solid straps
MIN_INSIDE = 0.8    # share of each item in the bin opening rather than behind a rim

# Fabric colours, weighted towards ABID's yellow-beige bins.
FABRICS = [(230, 216, 160), (160, 158, 150), (72, 96, 140), (48, 48, 52), (186, 164, 120)]
FABRIC_P = np.array([5, 2, 1.5, 1, 1.5]) / 11


def generate(out: Path, n: int, seed: int = 0, max_count: int = 5, workers: int | None = None,
             progress: bool = True, id_prefix: str = "synth",
             counts: list[int] | None = None) -> list[str]:
    """Write n synthetic bins under out in the ABID layout; return their ids in order.

    Counts are uniform over 0..max_count, unless `counts` gives one per image.
    """
    for name, value, lo, hi in (("n", n, 1, None), ("seed", seed, 0, None),
                                ("max count", max_count, 0, MAX_ITEMS),
                                ("workers", 1 if workers is None else workers, 1, None)):
        if (isinstance(value, bool) or not isinstance(value, int) or value < lo
                or (hi is not None and value > hi)):
            raise BinventoryError(f"{name} must be an integer from {lo}"
                                  f"{'' if hi is None else f' to {hi}'}, got {value!r}")
    if counts is not None and (len(counts) != n or not all(0 <= c <= MAX_ITEMS for c in counts)):
        raise BinventoryError(f"counts must give {n} values from 0 to {MAX_ITEMS}")
    width = max(6, len(str(n - 1)))
    ids = [check_image_id(f"{id_prefix}-{i:0{width}d}") for i in range(n)]
    out = Path(out)
    for sub in (image_key("x"), metadata_key("x")):
        (out / sub).parent.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, i, max_count, ids[i], None if counts is None else int(counts[i]))
            for i in range(n)]
    workers = min(workers or os.cpu_count() or 1, n)
    from tqdm import tqdm
    with tqdm(total=n, desc="synth", unit="img", disable=None if progress else True) as bar:
        if workers == 1:
            for job in jobs:
                _write_one(job)
                bar.update()
        else:
            with Pool(workers) as pool:
                chunk = max(1, min(16, n // (4 * workers)))
                for _ in pool.imap_unordered(_write_one, jobs, chunksize=chunk):
                    bar.update()
    # A model trained here must never pass for one trained on real photos.
    mark_synthetic(out, seed=seed, n=n, max_count=max_count, id_prefix=id_prefix)
    return ids


def _write_one(job) -> str:
    out, seed, index, max_count, image_id, count = job
    rng = np.random.default_rng([seed, index])
    drawn = int(rng.integers(0, max_count + 1))  # drawn even when given: the stream stays aligned
    image, record = render_bin(rng, drawn if count is None else count, image_id)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=int(rng.integers(75, 91)))
    atomic_write_bytes(Path(out) / image_key(image_id), buf.getvalue())
    atomic_write_bytes(Path(out) / metadata_key(image_id),
                  json.dumps(record_to_json(record), indent=2).encode())
    return image_id


def render_bin(rng: np.random.Generator, count: int,
               image_id: str) -> tuple[Image.Image, BinRecord]:
    """One bin photo holding `count` items, and its metadata record."""
    W, H = int(rng.integers(300, 481)), int(rng.integers(250, 421))
    img, front, geo = _background(rng, W, H)
    straps, solid = _plan_straps(rng, geo)
    styles = make_skus(rng, count, W, geo)
    for _ in range(12):
        canvas = img.copy()
        if _place_items(rng, canvas, front, solid, geo, styles):
            break
        for s in styles:  # too crowded for every item to stay countable: start again, smaller
            s["scale"] *= 0.8
            s["sprite"] = s["base"].resize((max(12, round(s["base"].width * s["scale"])),
                                            max(12, round(s["base"].height * s["scale"]))),
                                           Image.BILINEAR)
    else:
        raise BinventoryError(f"could not fit {count} countable items in a {W}x{H} bin")
    img = canvas
    img.paste(geo["rims"], (0, 0), front)  # the rims are nearer the camera than anything inside
    _draw_straps(rng, img, straps)
    skus = [sku_record(s) for s in styles]
    return _camera(rng, img), BinRecord(image_id, count, skus, image_fname=f"{image_id}.jpg")


# ---- the empty bin -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _weave() -> np.ndarray:
    # One fixed tile for all images: cheap, and identical in every worker process.
    y, x = np.mgrid[0:512, 0:512]
    grain = np.random.default_rng(12345).normal(128, 40, (512, 512)).clip(0, 255)
    grain = Image.fromarray(grain.astype(np.uint8)).filter(ImageFilter.BoxBlur(1))
    grain = np.asarray(grain, np.float32) / 128 - 1
    return (0.035 * np.sin(x * 2.1) * np.sin(y * 2.1) + 0.05 * grain).astype(np.float32)


def _background(rng, W, H):
    """The empty bin, a mask of its rims (which hide items) and its geometry."""
    fabric = np.array(FABRICS[rng.choice(len(FABRICS), p=FABRIC_P)], np.float32)
    fabric *= rng.uniform(0.97, 1.03, 3) * rng.uniform(0.85, 1.1)
    t, b = int(H * rng.uniform(0.04, 0.14)), int(H * rng.uniform(0.06, 0.16))
    floor = int(t + (H - b - t) * rng.uniform(0.62, 0.85))
    bl, br = int(W * rng.uniform(0.04, 0.16)), W - int(W * rng.uniform(0.04, 0.16))
    side = int(W * rng.uniform(0.01, 0.05)) if rng.random() < 0.4 else 0  # neighbouring bins
    shade = Image.new("L", (W, H), int(255 * rng.uniform(0.6, 0.8)))  # back wall, in shadow
    d = ImageDraw.Draw(shade)
    for x0, x1 in ((0, bl), (W, br)):
        d.polygon([(x0, t), (x1, t), (x1, floor), (x0, H - b)], fill=int(rng.uniform(175, 225)))
    d.polygon([(bl, floor), (br, floor), (W, H - b), (0, H - b)], fill=int(rng.uniform(190, 235)))
    front = Image.new("L", (W, H), 0)
    for box in ([0, 0, W, t], [0, H - b, W, H], [0, 0, side, H], [W - side, 0, W, H]):
        if box[2] > box[0]:
            ImageDraw.Draw(front).rectangle(box, fill=255)
    shade.paste(245, (0, 0), front)
    s = np.asarray(shade.filter(ImageFilter.BoxBlur(2)), np.float32) / 255
    # The bin above shades the top of the opening; fabric folds run mostly vertically.
    ramp = np.clip(np.linspace(0.6, 0.95, H, dtype=np.float32), 0, 1)[:, None]
    s = np.where(np.asarray(front) > 0, s, s * ramp)
    folds = Image.fromarray(rng.integers(0, 256, (3, int(rng.integers(6, 14))), dtype=np.uint8))
    folds = (np.asarray(folds.resize((W, H), Image.BICUBIC), np.float32) / 127.5 - 1)
    tex = (_weave()[:H, :W] if rng.random() < 0.5 else _weave()[-H:, -W:])
    rgb = fabric * (s * (1 + tex + folds * np.float32(rng.uniform(0.04, 0.12))))[..., None]
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    for y0, y1 in ((0, t), (H - b, H)):
        if y1 - y0 >= 12 and rng.random() < 0.9:
            _bin_label(rng, img, y0, y1, W)
    return img, front, {"W": W, "H": H, "t": t, "b": b, "floor": floor, "rims": img.copy()}


def _bin_label(rng, img, y0, y1, W):
    """A bin-location sticker with a short code and a QR-like square, as on real ABID bins."""
    h = int((y1 - y0) * rng.uniform(0.55, 0.85))
    w = int(h * rng.uniform(2.6, 3.6))
    x = int(rng.uniform(0.2, 0.8) * W - w / 2)
    y = y0 + (y1 - y0 - h) // 2 + int(rng.integers(-2, 3))
    d = ImageDraw.Draw(img)
    paper = [(238, 236, 228), (238, 160, 140), (150, 170, 215), (235, 180, 200)][rng.integers(4)]
    d.rectangle([x, y, x + w, y + h], fill=paper)
    d.rectangle([x + 2, y + 2, x + w * 0.6, y + h - 2], fill=(245, 245, 240))
    for j in range(3):  # the bin code's glyphs
        d.rectangle([x + 5 + j * h * 0.45, y + h * 0.25, x + 5 + j * h * 0.45 + h * 0.3,
                     y + h * 0.75], fill=(30, 30, 35))
    q = max(h - 4, 6)
    qr = Image.fromarray(rng.integers(0, 2, (9, 9), dtype=np.uint8) * 255)
    img.paste(qr.resize((q, q), Image.NEAREST).convert("RGB"), (x + w - q - 2, y + 2))


# ---- products ----------------------------------------------------------------------------------

def _rotated_size(sprite, angle):
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    return (int(sprite.width * c + sprite.height * s) + 1,
            int(sprite.width * s + sprite.height * c) + 1)


def _place_items(rng, img, front, solid, geo, styles):
    """Paste every item so that each stays countable: mostly in the bin and mostly unhidden.

    Rims and solid straps hide what is behind them; translucent strands do not count as hiding.
    Returns False when some item finds no such place.
    """
    W, H, t, b, floor = geo["W"], geo["H"], geo["t"], geo["b"], geo["floor"]
    owner = np.full((H, W), -1, np.int16)
    rim = np.asarray(front) > 0
    occluded = rim | (np.asarray(solid) > 0)
    areas, visible = [], []
    sdx, sdy, sdark = int(rng.integers(-4, 5)), int(rng.integers(2, 7)), rng.uniform(0.25, 0.55)
    placed = {}  # id(style) -> where its last copy went
    for style in [s for s in styles for _ in range(s["q"])]:
        prev, sp = placed.get(id(style)), style["sprite"]
        sp_alpha = sp.getchannel("A")  # the placement tests turn only this: 4x cheaper
        for _ in range(100):
            if prev is not None and rng.random() < 0.5:  # copies of a SKU tend to sit together
                angle = prev[2] + rng.normal(0, 3)
                rw, rh = _rotated_size(sp, angle)
                x = prev[0] + int(rng.choice([-1, 1]) * rw * rng.uniform(0.55, 1.05))
                y = prev[1] + int(rng.normal(0, 4))
            else:
                standing = rng.random() < 0.55  # else lying, leaning or piled on the others
                angle = rng.normal(0, 5) if standing else (
                    rng.uniform(-90, 90) if rng.random() < 0.6 else rng.normal(90, 10))
                rw, rh = _rotated_size(sp, angle)
                x = int(rng.uniform(0, max(1, W - rw)))
                low = floor if standing else t + (floor - t) * 0.4
                y = max(int(rng.uniform(low, H - b * 0.5)) - rh, t - rh // 10)
            if x < 0 or y < 0 or x + rw > W or y + rh > H:  # before paying for the rotation
                continue
            alpha = sp_alpha.rotate(angle, Image.BILINEAR, expand=True)
            if x + alpha.width > W or y + alpha.height > H:
                continue
            m = np.asarray(alpha) > 100
            area, region = int(m.sum()), (slice(y, y + alpha.height), slice(x, x + alpha.width))
            clear = m & ~occluded[region]
            if (area < 60 or (m & ~rim[region]).sum() < MIN_INSIDE * area
                    or clear.sum() < MIN_VISIBLE * area):
                continue
            hidden = np.bincount(owner[region][clear] + 1, minlength=len(areas) + 1)[1:]
            if all(visible[j] - hidden[j] >= MIN_VISIBLE * areas[j] for j in range(len(areas))):
                break
        else:
            return False
        visible = [v - int(hid) for v, hid in zip(visible, hidden)] + [int(clear.sum())]
        areas.append(area)
        owner[region][clear] = len(areas) - 1
        placed[id(style)] = (x, y, angle)
        rot = sp.convert("RGB").rotate(angle, Image.BILINEAR, expand=True)
        shadow = alpha.filter(ImageFilter.BoxBlur(3)).point(lambda v: int(v * sdark))
        img.paste((0, 0, 0), (x + sdx, y + sdy), shadow)
        gain = rng.uniform(0.9, 1.08)  # each copy catches the light a little differently
        img.paste(rot.point(lambda v: min(255, int(v * gain))), (x, y), alpha)
    return True


# ---- straps and camera -------------------------------------------------------------------------

def _plan_straps(rng, geo):
    """1-3 elastic bands across the front, and a mask of the solid ones (which hide items).

    Most bands are bundles of thin light strands, as in ABID; the rest are one solid strap.
    """
    W, H, t, b = geo["W"], geo["H"], geo["t"], geo["b"]
    xs = np.linspace(0, W, 16)
    u = (xs / W - 0.5) * 2
    solid, straps = Image.new("L", (W, H), 0), []
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    for c in np.sort(rng.uniform(t + (H - t - b) * 0.1, H - b - (H - t - b) * 0.05, n)):
        yy = c + rng.uniform(0, 0.06) * H * (1 - u ** 2) + rng.uniform(-0.03, 0.03) * H * u  # sag
        if rng.random() < 0.7:
            straps.append(("strands", xs, yy, int(rng.integers(8, 28)), rng.uniform(2.0, 4.5)))
        else:
            col = colour(rng) if rng.random() < 0.4 else (int(rng.integers(25, 70)),) * 3
            width = int(rng.integers(4, 11))
            straps.append(("band", xs, yy, width, col))
            ImageDraw.Draw(solid).line(list(zip(xs, yy)), fill=255, width=width)
    return straps, solid


def _draw_straps(rng, img, straps):
    d = ImageDraw.Draw(img, "RGBA")
    for kind, xs, yy, k, extra in straps:
        if kind == "strands":
            grey = int(rng.integers(195, 250))
            for s in range(k):
                y = yy + (s - k / 2) * extra + rng.normal(0, 0.4)
                d.line(list(zip(xs, y)), fill=(grey, grey, grey - 8, int(rng.integers(120, 230))),
                       width=int(rng.choice([1, 1, 2])))
        else:
            d.line(list(zip(xs, yy)), fill=extra + (255,), width=k)
            d.line(list(zip(xs, yy - k / 2 + 1)), fill=shade(extra, 1.4) + (120,), width=1)


def _camera(rng, img):
    """Lighting (gradient, vignette, colour cast, haze), lens blur and sensor noise."""
    W, H = img.size
    yy = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
    gx, gy, vig = (np.float32(v) for v in (rng.uniform(-.15, .15), rng.uniform(-.15, .15),
                                           rng.uniform(0, 0.35) / 2))
    gain = (np.float32(rng.uniform(0.75, 1.2)) * (1 + gx * xx + gy * yy)
            * (1 - vig * (xx * xx + yy * yy)))
    haze = rng.uniform(0, 0.15)
    cast = np.array([1 + rng.uniform(-0.04, 0.08), 1 + rng.uniform(-0.04, 0.06),
                     1 - rng.uniform(-0.05, 0.12)], np.float32) * np.float32(1 - haze)
    a = np.asarray(img, np.float32) * (gain[..., None] * cast)
    a += np.float32(haze * 200)
    out = Image.fromarray(np.clip(a, 0, 255, out=a).astype(np.uint8))
    out = out.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 1.2)))
    noise = rng.standard_normal((H, W), dtype=np.float32) * np.float32(rng.uniform(1, 4)) + 128
    noise = Image.fromarray(np.clip(noise, 0, 255, out=noise).astype(np.uint8)).convert("RGB")
    return ImageChops.add(out, noise, 1.0, -128)
