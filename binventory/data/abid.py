"""The Amazon Bin Image Dataset (ABID) layout and its metadata records.

A dataset root holds ``bin-images/<id>.jpg`` and ``metadata/<id>.json``, exactly as the public
bucket ``aft-vbi-pds`` does. Image ids are strings: "00523" and "523" are different images.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from binventory import BinventoryError

BUCKET = "aft-vbi-pds"
IMAGE_DIR = "bin-images"
METADATA_DIR = "metadata"
IMAGE_SUFFIX = ".jpg"
METADATA_SUFFIX = ".json"

# The Udacity capstone's 1-5 item subset (10,441 images), pinned to the commit that published it.
UDACITY_LIST_URL = (
    "https://raw.githubusercontent.com/udacity/nd009t-capstone-starter/"
    "afbfec793f76a70e95849362d0254a6cb2914dea/starter/file_list.json"
)

# No bin holds more items than this (ABID's fullest hold a few hundred): a larger quantity is a
# broken record, not a count to index, train on or store.
MAX_BIN_QUANTITY = 10_000

# Ids are file stems; anything that could escape the layout's folders is refused.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_image_id(image_id: str) -> str:
    image_id = str(image_id).strip()
    if not _ID_RE.match(image_id) or ".." in image_id:
        raise BinventoryError(f"invalid ABID image id {image_id!r}")
    return image_id


def image_key(image_id: str) -> str:
    """Key (and relative path) of an image in the ABID layout."""
    return f"{IMAGE_DIR}/{image_id}{IMAGE_SUFFIX}"


def metadata_key(image_id: str) -> str:
    """Key (and relative path) of a metadata record in the ABID layout."""
    return f"{METADATA_DIR}/{image_id}{METADATA_SUFFIX}"


@dataclass
class SkuRecord:
    asin: str
    name: str = ""
    quantity: int = 0
    # Dimensions in inches and weight in pounds, as ABID records them (None when absent).
    length: float | None = None
    width: float | None = None
    height: float | None = None
    weight: float | None = None


@dataclass
class BinRecord:
    """One ABID metadata file: the label (EXPECTED_QUANTITY) and the bin's SKUs."""

    image_id: str
    expected_quantity: int
    skus: list[SkuRecord] = field(default_factory=list)
    image_fname: str | None = None

    @property
    def sku_quantity_sum(self) -> int:
        return sum(s.quantity for s in self.skus)


def _measure(entry: dict, name: str) -> float | None:
    value = entry.get(name)
    if isinstance(value, dict):
        value = value.get("value")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _check_plausible(name: str, quantity: int) -> None:
    if quantity > MAX_BIN_QUANTITY:
        raise ValueError(f"{name} of {quantity:,} is not plausible: more than {MAX_BIN_QUANTITY:,} "
                         "items in one bin")


def parse_metadata(data: dict, image_id: str) -> BinRecord:
    """Parse a decoded metadata JSON object; raises ValueError with a reason when malformed."""
    if not isinstance(data, dict):
        raise ValueError("metadata is not a JSON object")
    if "EXPECTED_QUANTITY" not in data:
        raise ValueError("EXPECTED_QUANTITY is missing")
    quantity = data["EXPECTED_QUANTITY"]
    # bool is an int in Python; a count of True is not a count.
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        raise ValueError(f"EXPECTED_QUANTITY is not a non-negative integer: {quantity!r}")
    _check_plausible("EXPECTED_QUANTITY", quantity)
    skus_data = data.get("BIN_FCSKU_DATA")
    skus_data = {} if skus_data is None else skus_data
    if not isinstance(skus_data, dict):
        raise ValueError("BIN_FCSKU_DATA is not an object")
    skus = []
    for asin, entry in skus_data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"BIN_FCSKU_DATA[{asin!r}] is not an object")
        q = entry.get("quantity", 0)
        if isinstance(q, bool) or not isinstance(q, int) or q < 0:
            raise ValueError(f"quantity of SKU {asin!r} is not a non-negative integer: {q!r}")
        _check_plausible(f"quantity of SKU {asin!r}", q)
        skus.append(SkuRecord(
            asin=str(entry.get("asin", asin)),
            name=str(entry.get("name", "")),
            quantity=q,
            length=_measure(entry, "length"),
            width=_measure(entry, "width"),
            height=_measure(entry, "height"),
            weight=_measure(entry, "weight"),
        ))
    return BinRecord(image_id=image_id, expected_quantity=quantity, skus=skus,
                     image_fname=data.get("image_fname"))


def read_metadata(path: str | Path, image_id: str | None = None) -> BinRecord:
    """Read one metadata file; raises ValueError with a reason when it is not a valid record."""
    # os.path, not pathlib: an import reads half a million of these, and Path objects add up.
    if image_id is None:
        image_id = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, "rb") as f:
            raw = f.read()
        # Strip a BOM by hand: the utf-8-sig codec is pure Python and several times slower.
        data = json.loads((raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"metadata is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"metadata is not valid JSON: {e.msg} at line {e.lineno}") from None
    return parse_metadata(data, image_id)


def record_to_json(record: BinRecord) -> dict:
    """The ABID JSON form of a record (used by the synthetic generator and tests)."""
    skus = {}
    for s in record.skus:
        entry: dict = {"asin": s.asin, "name": s.name, "quantity": s.quantity}
        for dim in ("length", "width", "height"):
            value = getattr(s, dim)
            if value is not None:
                entry[dim] = {"unit": "IN", "value": value}
        if s.weight is not None:
            entry["weight"] = {"unit": "pounds", "value": s.weight}
        skus[s.asin] = entry
    out: dict = {"BIN_FCSKU_DATA": skus, "EXPECTED_QUANTITY": record.expected_quantity}
    out["image_fname"] = record.image_fname or f"{record.image_id}{IMAGE_SUFFIX}"
    return out


# ---- id lists ------------------------------------------------------------------------------

def read_id_list(path: str | Path) -> list[str]:
    """Read ids from a text file (one per line, '#' comments) or a file_list.json-style JSON.

    Lines may be bare ids or paths such as ``metadata/00523.json``; the stem is the id. Order
    is kept and duplicates are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise BinventoryError(f"id list not found: {path}")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BinventoryError(f"{path}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict):
            return list(subset_ids(data).keys())
        if isinstance(data, list):
            entries = [str(x) for x in data]
        else:
            raise BinventoryError(f"{path}: expected a JSON list or a file_list.json object")
    else:
        entries = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids: dict[str, None] = {}
    for entry in entries:
        if entry:
            ids[check_image_id(Path(entry).stem if "/" in entry or entry.endswith(".json") else entry)] = None
    return list(ids)


def subset_ids(file_list: dict) -> dict[str, int]:
    """Ids of a ``file_list.json`` subset ({"1": ["data/metadata/<id>.json", ...], ...}).

    Returns {id: count} interleaved across counts (1, 2, 3, 4, 5, 1, 2, ...), so that the first N
    ids of any prefix are balanced across counts: ``--limit`` then keeps the class mix.
    """
    columns = []
    for key, paths in file_list.items():
        try:
            count = int(key)
        except ValueError:
            raise BinventoryError(f"file list key {key!r} is not a count") from None
        if not isinstance(paths, list):
            raise BinventoryError(f"file list entry {key!r} is not a list of paths")
        columns.append([(check_image_id(Path(str(p)).stem), count) for p in paths])
    out: dict[str, int] = {}
    for row in range(max((len(c) for c in columns), default=0)):
        for column in columns:
            if row < len(column):
                out.setdefault(*column[row])
    return out
