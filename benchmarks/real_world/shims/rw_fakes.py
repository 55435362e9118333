"""Deterministic fake data shared by the shims: seeded generators, sizes, fake download archives."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import numpy as np


def rng(*key: object) -> np.random.Generator:
    """A numpy generator seeded from ``key`` (never the script's global RNG streams)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def size(default: int, train: bool = True) -> int:
    """Samples in a fake dataset: RW_FAKE_TRAIN_SIZE / RW_FAKE_TEST_SIZE override ``default``."""
    name = "RW_FAKE_TRAIN_SIZE" if train else "RW_FAKE_TEST_SIZE"
    return int(os.environ.get(name, default))


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cora_tgz(nodes: int = 1800, features: int = 48, classes: int = 7, edges: int = 3600) -> bytes:
    """A Cora-shaped archive (cora/cora.content, cora/cora.cites) with random sparse features."""
    r = rng("cora")
    ids = r.choice(10**6, size=nodes, replace=False) + 1
    labels = [f"Class_{i}" for i in range(classes)]
    rows = []
    for pid in ids:
        feats = (r.random(features) < 0.1).astype(int)
        feats[r.integers(features)] = 1
        rows.append("\t".join([str(pid), *map(str, feats), labels[r.integers(classes)]]))
    cites = [f"{ids[a]}\t{ids[b]}" for a, b in r.integers(nodes, size=(edges, 2)) if a != b]
    return _tgz({
        "cora/cora.content": ("\n".join(rows) + "\n").encode(),
        "cora/cora.cites": ("\n".join(cites) + "\n").encode(),
        "cora/README": b"fake Cora for the torch-migrate scoreboard\n",
    })


def bsds300_tgz(train: int = 12, test: int = 4, side: int = 260) -> bytes:
    """A BSDS300-shaped archive of small random JPEGs (BSDS300/images/{train,test}/*.jpg)."""
    from PIL import Image

    members = {}
    for split, count in (("train", train), ("test", test)):
        r = rng("bsds300", split)
        for i in range(count):
            pixels = r.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=80)
            members[f"BSDS300/images/{split}/{1000 + i}.jpg"] = buf.getvalue()
    return _tgz(members)


def archive_for(url: str) -> bytes:
    """The fake payload of a known dataset URL; anything else fails like a machine offline."""
    if url.endswith("cora.tgz"):
        return cora_tgz()
    if "BSDS300" in url:
        return bsds300_tgz()
    raise ConnectionError(f"fake network (torch-migrate scoreboard): no payload for {url}")
