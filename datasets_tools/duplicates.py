"""Near-duplicates: perceptual hashes (imagehash's pHash) compared by Hamming distance, grouped transitively.

pHash (DCT of a 32x32 grey thumbnail, sign of the 8x8 lowest frequencies against their median;
https://github.com/JohannesBuchner/imagehash, after Zauner 2010, "Implementation and Benchmarking of
Perceptual Image Hash Functions") barely moves under resizing, recompression, small crops, tone changes and
slight rotations. But 64 bits of grey layout also come close for *different* shots of one object framed
alike, so a pHash match is only a candidate: it is confirmed when the colour layouts agree too, i.e. the
correlation distance ``1 - r`` between 16x16 colour thumbnails (mean removed, so brightness changes do not
matter) is at most ``max_thumb_distance``. Hashes are taken after the padding crop, so a letterboxed copy
matches its original; with ``match_mirrored`` the mirror images are compared too.

A copy cropped by a few per cent on each side moves every pHash bit's DCT basis a little: such copies
measured 10-16 bits (and thumbnail distances up to 0.06) from their original, as far as different shots.
So each image is also fingerprinted by its central ``centre_fraction`` (92 %: the middle of crops of
2-6 % per side), and a pair's distances are the smallest over (whole, whole), (centre, whole) and
(whole, centre): the original's centre is about what the cropped copy shows. On the tuning seeds this
found all 60 edited copies instead of 55, with 2 false pairs instead of 1. Confirmed pairs are
joined into groups (union-find);
in each group one image is kept (fewest other problems, then most pixels, then best JPEG quality, then
file order) and the others are marked as duplicates of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps

#: Bits in a pHash with imagehash's default hash_size of 8.
HASH_BITS = 64
#: Side of the colour thumbnails that confirm a pHash match.
THUMB_SIDE = 16
#: Rows of the pairwise hash comparison done at once (64 MiB of distances for 8192 images per block row).
BLOCK = 1024


@dataclass
class DuplicateConfig:
    max_distance: int = 14
    """Largest Hamming distance (of 64 bits) between pHashes of duplicate candidates."""
    max_thumb_distance: float = 0.05
    """Largest correlation distance ``1 - r`` between the colour thumbnails of confirmed near-duplicates."""
    match_mirrored: bool = True
    """Also match an image against the left-right mirror of another."""
    centre_fraction: float = 0.92
    """Side of the central crop fingerprinted as well (fraction of each side); 1 turns the crop
    comparison off. 0.92 covers crops of 2-6 % per side (0.84 added false pairs on the tuning seeds)."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_thumb_distance <= 2:
            raise ValueError(f"duplicates.max_thumb_distance must be within 0..2, got {self.max_thumb_distance}")
        if not 0 <= self.max_distance < HASH_BITS // 2:
            raise ValueError(f"duplicates.max_distance must be within 0..{HASH_BITS // 2 - 1}, got {self.max_distance}")
        if not 0.5 <= self.centre_fraction <= 1:
            raise ValueError(f"duplicates.centre_fraction must be within 0.5..1, got {self.centre_fraction}")


def phash_pair(rgb: np.ndarray) -> tuple[str, str]:
    """Hex pHash of the image and of its left-right mirror."""
    image = Image.fromarray(rgb)
    return str(imagehash.phash(image)), str(imagehash.phash(ImageOps.mirror(image)))


def central_crop(rgb: np.ndarray, fraction: float) -> np.ndarray:
    """The centred crop of ``rgb`` keeping ``fraction`` of its height and of its width."""
    height, width = rgb.shape[:2]
    dy, dx = round(height * (1 - fraction) / 2), round(width * (1 - fraction) / 2)
    return rgb[dy : height - dy, dx : width - dx]


def colour_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """16x16 RGB thumbnail as a zero-mean unit vector (float32), for correlation distances."""
    thumb = np.asarray(Image.fromarray(rgb).resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR))
    vector = thumb.astype(np.float64).ravel()
    vector -= vector.mean()
    return (vector / (np.linalg.norm(vector) + 1e-12)).astype(np.float32)


def mirrored_thumbnail(thumb: np.ndarray) -> np.ndarray:
    """The :func:`colour_thumbnail` of the left-right mirror, from the thumbnail itself."""
    return thumb.reshape(THUMB_SIDE, THUMB_SIDE, 3)[:, ::-1].ravel().copy()


def _as_uint64(hex_hashes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two arrays of 64-bit hashes."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int64)


def _correlations(a: np.ndarray, b: np.ndarray, ta: np.ndarray, tb: np.ndarray, mirrored: bool) -> np.ndarray:
    """Correlations of the thumbnails ``ta[a]`` with ``tb[b]`` (pairwise rows), mirror images included."""
    corr = np.einsum("ij,ij->i", ta[a], tb[b])
    if mirrored:
        flipped = np.stack([mirrored_thumbnail(t) for t in tb[b]]) if len(b) else tb[b]
        corr = np.maximum(corr, np.einsum("ij,ij->i", ta[a], flipped))
    return corr


def near_duplicate_pairs(
    hashes: list[str],
    mirrored: list[str],
    thumbs: np.ndarray,
    cfg: DuplicateConfig,
    centre: tuple[list[str], list[str], np.ndarray] | None = None,
) -> list[tuple[int, int, int]]:
    """``(i, j, phash distance)`` for ``i < j``: pHash candidates (``max_distance``) whose colour
    thumbnails (rows of ``thumbs``, from :func:`colour_thumbnail`) confirm them.

    ``centre``: (hashes, mirrored hashes, thumbnails) of each image's central crop (:func:`central_crop`);
    then both distances are the smallest over whole-whole, centre-whole and whole-centre (see the module
    docstring). Hashes are compared in blocks of :data:`BLOCK` rows (memory grows with the block, not
    with N^2); thumbnails are only correlated for the candidate pairs.
    """
    n = len(hashes)
    if n < 2:
        return []
    h = _as_uint64(hashes)
    m = _as_uint64(mirrored) if cfg.match_mirrored else None
    views = [(h, m, thumbs)]
    if centre is not None:
        views.append((_as_uint64(centre[0]), _as_uint64(centre[1]) if cfg.match_mirrored else None, centre[2]))
    # (view of the row image, view of the column image): whole-whole, then centre-whole and whole-centre.
    combos = [(0, 0)] + ([(1, 0), (0, 1)] if centre is not None else [])
    pairs = []
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(n, start + BLOCK))
        dist = None
        for va, vb in combos:
            ha, ma, _ = views[va]
            hb, mb, _ = views[vb]
            d = hamming_matrix(ha[rows], hb)
            if ma is not None:
                d = np.minimum(d, np.minimum(hamming_matrix(ha[rows], mb), hamming_matrix(ma[rows], hb)))
            dist = d if dist is None else np.minimum(dist, d)
        i, j = np.nonzero((dist <= cfg.max_distance) & (np.arange(n)[None, :] > rows[:, None]))
        a, b = rows[i], j
        corr = np.full(len(a), -1.0)
        for va, vb in combos:
            # Symmetric: the centre of either image against the whole of the other.
            corr = np.maximum(corr, _correlations(a, b, views[va][2], views[vb][2], cfg.match_mirrored))
        keep = 1.0 - corr <= cfg.max_thumb_distance
        pairs += [(int(x), int(y), int(d)) for x, y, d in zip(a[keep], b[keep], dist[i[keep], j[keep]], strict=True)]
    return pairs


def group_pairs(n: int, pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    """Connected components (size >= 2) of the pair graph over ``n`` items, each sorted, in order of first item."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in range(n):
        groups.setdefault(find(x), []).append(x)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
