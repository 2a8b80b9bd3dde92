"""The products in synthetic bins: their look (sprites), names, ASINs, sizes and weights."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from binventory.data.abid import SkuRecord

# kind: (share of SKUs, aspect range of the visible face, density in lb/in^3)
KINDS = {"box": (0.34, (0.45, 1.0), 0.02), "book": (0.18, (0.62, 0.8), 0.025),
         "pouch": (0.22, (0.55, 0.9), 0.012), "bottle": (0.12, (0.3, 0.45), 0.035),
         "blister": (0.14, (0.55, 0.8), 0.006)}
BRANDS = "Acme Vexlo Northway Kitchio Brightline Zenpro Oakhurst Lumora Trailex Nimbus".split()
ADJS = "Compact|Premium|Heavy Duty|Classic|Organic|Ultra|Travel|Pro".split("|")
EXTRAS = "Black|2-Pack|Large|6 Pairs|120 Count|Blue|8-Pack|12 oz|White".split("|")
TITLE = "Quiet Garden River Modern Practical Lost Kitchen Star Winter".split()
NOUNS = {k: v.split("|") for k, v in {
    "box": "USB-C Wall Charger|Oil Filter|Kitchen Timer|LED Bulb|Phone Case|Toner Cartridge",
    "book": "Field Guide|Cookbook|Handbook|Workbook|Novel|Atlas|Journal",
    "pouch": "Crew Socks|Cotton T-Shirt|Microfiber Cloths|Dog Treats|Cable Ties",
    "bottle": "Multivitamin Gummies|Hand Soap|Shampoo|Hot Sauce|Car Wax",
    "blister": "AA Batteries|Screwdriver Set|Earbuds|Fishing Lures|Guitar Picks"}.items()}
ASIN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def colour(rng):
    r = rng.random()
    if r < 0.15:
        return tuple(int(v) for v in rng.uniform(225, 250, 3))  # white packaging
    if r < 0.3:
        return tuple(int(v * rng.uniform(0.7, 1.1)) for v in (170, 130, 90))  # cardboard
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.25, 0.9), rng.uniform(0.3, 0.95))
    return tuple(int(255 * c) for c in rgb)


def shade(c, f):
    return tuple(int(min(255, v * f)) for v in c)


def text_marks(d, rng, box, colour, rows=None):
    """Rows of dashes, which read as print at this resolution."""
    x0, y0, x1, y1 = box
    if y1 - y0 < 4 or x1 - x0 < 4:
        return
    lh = min(max(5.0, (y1 - y0) / rows) if rows else rng.uniform(6, 16), y1 - y0)
    for y in np.arange(y0, y1 - lh * 0.6 + 1e-6, lh):
        x, end = x0 + rng.uniform(0, 0.1) * (x1 - x0), x0 + (x1 - x0) * rng.uniform(0.5, 1.0)
        while x < end:
            w = rng.uniform(0.75, 2.5) * lh
            d.rectangle([x, y, min(x + w, end), y + lh * 0.55], fill=colour)
            x += w + lh * 0.35


def draw_sprite(rng, kind, w, h) -> Image.Image:
    """One product's look as an RGBA sprite, drawn at 2x and halved for smooth edges."""
    W, H = 2 * w, 2 * h
    base, acc = colour(rng), colour(rng)
    ink = (25, 25, 30) if rng.random() < 0.7 else colour(rng)
    im, a = Image.new("RGB", (W, H), base), Image.new("L", (W, H), 0)
    d, da = ImageDraw.Draw(im, "RGBA"), ImageDraw.Draw(a)
    if kind in ("box", "book"):
        da.rectangle([0, 0, W, H], fill=255)
        if rng.random() < 0.6:  # a second face, seen in perspective
            d.rectangle([0, 0, W, H * rng.uniform(0.06, 0.16)], fill=shade(base, 0.72))
    if kind == "book":
        d.rectangle([0, 0, W * 0.08, H], fill=shade(base, 0.7))  # spine
        d.rectangle([W * 0.15, H * 0.08, W * 0.9, H * 0.3], fill=acc)
        text_marks(d, rng, (W * 0.2, H * 0.12, W * 0.85, H * 0.27), ink, rows=2)
        d.ellipse([W * 0.25, H * 0.38, W * 0.8, H * 0.75], fill=colour(rng))
        text_marks(d, rng, (W * 0.2, H * 0.82, W * 0.8, H * 0.92), ink, rows=1)
    elif kind == "box":
        bands = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
        for _ in range(bands):  # printed bands
            y = H * rng.uniform(0.2, 0.9)
            d.polygon([(0, y), (W, y - H * rng.uniform(-0.3, 0.3)), (W, y + H * 0.08),
                       (0, y + H * 0.12)], fill=acc)
        px, py = W * rng.uniform(0.05, 0.4), H * rng.uniform(0.25, 0.55)
        d.rectangle([px, py, px + W * 0.5, py + H * 0.35],
                    fill=(240, 240, 236) if rng.random() < 0.5 else acc)
        text_marks(d, rng, (px + W * 0.04, py + H * 0.04, px + W * 0.46, py + H * 0.31), ink)
        if rng.random() < 0.4:  # barcode
            bx, by, bw, bh = W * rng.uniform(0.55, 0.75), H * rng.uniform(0.65, 0.8), W / 5, H / 7
            d.rectangle([bx, by, bx + bw, by + bh], fill=(250, 250, 250))
            for xx in np.arange(bx + 2, bx + bw - 2, 3):
                d.line([(xx, by + 2), (xx, by + bh - 2)], fill=(20, 20, 20),
                       width=int(rng.integers(1, 3)))
    elif kind == "pouch":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        r = rng.uniform(0.93, 1.0, 24)  # a soft, slightly lumpy squircle
        c, s = np.cos(t), np.sin(t)
        pts = list(zip(W / 2 * (1 + r * np.sign(c) * abs(c) ** 0.3),
                       H / 2 * (1 + r * np.sign(s) * abs(s) ** 0.3)))
        da.polygon(pts, fill=int(rng.uniform(215, 255)))
        if rng.random() < 0.4:  # a milky polybag with the product showing through
            d.rectangle([0, 0, W, H], fill=shade((235, 235, 235), rng.uniform(0.8, 1)))
            d.rounded_rectangle([W * .2, H * .2, W * .8, H * .8], radius=W * .1, fill=acc + (150,))
        d.rectangle([0, H * 0.03, W, H * 0.1], fill=shade(base, 0.85) + (160,))  # heat seal
        for _ in range(int(rng.integers(4, 10))):  # crinkles and glare
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            d.line([(x, y), (x + rng.uniform(-W, W) * 0.3, y + rng.uniform(-H, H) * 0.3)],
                   fill=(255, 255, 255, int(rng.integers(60, 150))), width=int(rng.integers(2, 8)))
        if rng.random() < 0.6:
            d.rectangle([W * 0.3, H * 0.55, W * 0.75, H * 0.8], fill=(245, 245, 245))
            text_marks(d, rng, (W * 0.33, H * 0.58, W * 0.72, H * 0.77), ink)
    elif kind == "bottle":
        neck = W * rng.uniform(0.3, 0.5)
        da.rounded_rectangle([0, H * 0.22, W, H], radius=W * 0.18, fill=255)
        da.rectangle([(W - neck) / 2, 0, (W + neck) / 2, H * 0.3], fill=255)
        d.rectangle([(W - neck) / 2, 0, (W + neck) / 2, H * 0.12], fill=acc)  # cap
        d.rectangle([0, H * 0.45, W, H * 0.85], fill=colour(rng))
        text_marks(d, rng, (W * 0.12, H * 0.5, W * 0.88, H * 0.8), ink)
        d.rectangle([W * 0.15, H * 0.25, W * 0.25, H * 0.95], fill=(255, 255, 255, 70))  # glare
    else:  # blister: a printed card with a hang hole and a clear bubble
        da.rounded_rectangle([0, 0, W, H], radius=W * 0.06, fill=255)
        da.ellipse([W * 0.44, H * 0.04, W * 0.56, H * 0.1], fill=0)
        text_marks(d, rng, (W * 0.1, H * 0.14, W * 0.9, H * 0.3), ink, rows=2)
        d.rounded_rectangle([W * 0.15, H * 0.36, W * 0.85, H * 0.94], radius=W * 0.08,
                            fill=(230, 235, 240, 170), outline=(255, 255, 255, 200), width=3)
        d.ellipse([W * 0.3, H * 0.45, W * 0.7, H * 0.85], fill=acc)
    # A dark line along the silhouette keeps touching copies of one SKU apart.
    shape = a.point(lambda v: 255 if v else 0)
    inner = shape.filter(ImageFilter.BoxBlur(2)).point(lambda v: 255 if v > 250 else 0)
    im.paste(shade(base, 0.5), (0, 0), ImageChops.subtract(shape, inner))
    im.putalpha(a)
    return im.reduce(2)


def make_skus(rng, count, W, geo):
    """1..4 SKUs whose quantities sum to count, each with one look and size for all its items."""
    if count == 0:
        return []
    n_skus = int(rng.integers(1, min(count, 4) + 1))
    quantities = rng.multinomial(count - n_skus, rng.dirichlet(np.ones(n_skus))) + 1
    inch = rng.uniform(12, 20) / W  # the bin's front spans 12-20 inches
    opening = geo["H"] - geo["t"] - geo["b"]
    styles = []
    for q in quantities:
        kind = list(KINDS)[rng.choice(len(KINDS), p=[v[0] for v in KINDS.values()])]
        # Sizes never depend on count; crowded bins shrink items only when they cannot fit.
        long = min(W * np.exp(rng.uniform(np.log(0.18), np.log(0.6))), opening * 0.95)
        short = long * rng.uniform(*KINDS[kind][1])
        upright = kind in ("book", "bottle") or rng.random() < 0.5
        w, h = (max(int(v), 12) for v in ((short, long) if upright else (long, short)))
        depth = {"book": rng.uniform(0.05, 0.2), "bottle": 0.8,
                 "blister": rng.uniform(0.1, 0.25)}.get(kind, rng.uniform(0.2, 0.9)) * min(w, h)
        asin = "B0" + "".join(ASIN_CHARS[i] for i in rng.integers(0, 36, 8))
        if kind == "book":
            name = (f"The {rng.choice(TITLE)} {rng.choice(TITLE)}: "
                    f"A {rng.choice(NOUNS['book'])} (Paperback)")
        else:
            name = (f"{rng.choice(BRANDS)} {rng.choice(ADJS)} {rng.choice(NOUNS[kind])}, "
                    f"{rng.choice(EXTRAS)}")
        sprite = draw_sprite(rng, kind, w, h)
        styles.append({"base": sprite, "sprite": sprite, "q": int(q), "asin": asin,
                       "name": name, "inches": (w * inch, h * inch, depth * inch),
                       "density": KINDS[kind][2], "scale": 1.0})
    return styles


def sku_record(style) -> SkuRecord:
    # Dimensions follow the size the items were finally drawn at.
    dims = sorted((v * style["scale"] for v in style["inches"]), reverse=True)
    weight = max(0.05, dims[0] * dims[1] * dims[2] * style["density"])
    return SkuRecord(asin=style["asin"], name=style["name"], quantity=style["q"],
                     length=round(dims[0], 2), width=round(dims[1], 2), height=round(dims[2], 2),
                     weight=round(weight, 2))
