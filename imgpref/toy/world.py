"""A procedural text-to-image world whose every output can be scored exactly.

Why it exists: preference tuning (Diffusion-DPO, GRPO/GDPO) needs a reward that is cheap, exact and
impossible to argue with, and a model small enough to train from scratch on a CPU in minutes. Here a
prompt names four attributes (colour, shape, quadrant, background) of one flat shape on a flat
background, so `imgpref.toy.judge` can check a generated image attribute by attribute.

Geometry: every shape fills the square box ``[cx - r, cx + r] x [cy - r, cy + r]`` (the triangle points
up with its base on the bottom edge, the cross is a plus sign). Shapes are rasterised analytically at
``SUPERSAMPLE`` x and box-averaged: the same pixels as drawing at 4x (e.g. with PIL) and
box-downsampling, but with exact sub-pixel centres, and with one definition of each shape
(`shape_inside`, `shape_coverage`) that the judge reuses to build the templates it compares against.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

# Shape colours, RGB 0-255. Chosen so that the closest colour/background pair (purple on gray) is still
# ~124 apart and the closest colour/colour pair (orange/yellow) ~104 apart: far beyond noise sigma 12.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 35),
    "green": (30, 170, 40),
    "blue": (40, 70, 230),
    "yellow": (235, 225, 25),
    "purple": (160, 32, 200),
    "orange": (245, 125, 0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Quadrant name -> (column, row) index of the quadrant in a 2x2 grid.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top right": (1, 0),
    "bottom left": (0, 1),
    "bottom right": (1, 1),
}

# Geometry in pixels at REFERENCE_SIZE; everything scales with size / REFERENCE_SIZE.
REFERENCE_SIZE = 32
CENTER_JITTER = 1.5  # max offset of the shape centre from the quadrant centre, per axis
RADIUS_RANGE = (4.5, 6.5)  # half the side of the shape's box; 6.5 + 1.5 = 8 keeps it inside its quadrant
SUPERSAMPLE = 4  # sub-samples per pixel side for anti-aliasing
#: How the toy model is sampled for evaluation and pair generation: classifier-free guidance and Euler
#: steps (measured good on the toy; here, beside the world, so configs read them without torch).
DEFAULT_CFG, DEFAULT_STEPS = 3.0, 16
CROSS_ARM_HALF_WIDTH = 1 / 3  # cross arm half-width in units of r: arms one third of the box side

# Salt of the hash that orders combinations for the train/held-out split; changing it changes the split.
SPLIT_SALT = "imgpref-toy-split-v1"
HELDOUT_FRACTION = 1 / 8
SPLITS = ("train", "heldout")

# Every word any prompt of the world uses (full and generic prompts), for in-memory tokenizers.
GENERIC_WORDS = ("a", "photo", "of")
TEMPLATE_WORDS = ("a", "at", "the", "on", "background")
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        GENERIC_WORDS
        + TEMPLATE_WORDS
        + tuple(COLORS)
        + SHAPES
        + tuple(word for name in POSITIONS for word in name.split())
        + tuple(BACKGROUNDS)
    )
)

_ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
}


@dataclass(frozen=True)
class Attributes:
    """What a prompt asks for. A field is None only in a partial parse (the prompt does not name it)."""

    color: str | None
    shape: str | None
    position: str | None
    background: str | None

    def __post_init__(self) -> None:
        for name, allowed in _ATTRIBUTE_VALUES.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")

    @property
    def is_complete(self) -> bool:
        return all(getattr(self, f.name) is not None for f in fields(self))

    def named(self) -> dict[str, str]:
        """The attributes this value names (all four for a complete one)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Placement:
    """Where a shape lands, in pixels of the output image: centre (cx, cy) and half box side r."""

    cx: float
    cy: float
    radius: float


def _require_complete(attrs: Attributes) -> None:
    if not attrs.is_complete:
        missing = [f.name for f in fields(attrs) if getattr(attrs, f.name) is None]
        raise ValueError(f"attributes {attrs} lack {missing}; a full prompt and a render need all four")


def prompt(attrs: Attributes) -> str:
    """The full prompt, e.g. 'a red triangle at the top left on a white background'."""
    _require_complete(attrs)
    return f"a {attrs.color} {attrs.shape} at the {attrs.position} on a {attrs.background} background"


def generic_prompt(attrs: Attributes) -> str:
    """The class prompt 'a photo of a triangle' (the pair generator's corrupted prompt)."""
    if attrs.shape is None:
        raise ValueError(f"attributes {attrs} name no shape, so they have no class prompt")
    return f"a photo of a {attrs.shape}"


_FULL_PROMPT = re.compile(
    r"a (?P<color>\w+) (?P<shape>\w+) at the (?P<position>\w+ \w+) on a (?P<background>\w+) background"
)


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " ").replace(".", " ").split()


def parse_prompt(text: str, partial: bool = False) -> Attributes:
    """Read the attributes a prompt names.

    Strict mode accepts exactly the `prompt` template. With ``partial=True`` any word order is read:
    colour and shape words, 'top/bottom left/right' and '<background> background'; fields the prompt does
    not name are None. Unknown words, or an attribute named twice, are errors in both modes, so a prompt
    from outside this world is never half-understood silently.
    """
    words = _words(text)
    unknown = sorted({w for w in words if w not in VOCABULARY})
    if unknown:
        raise ValueError(f"prompt {text!r} has words outside the toy world: {unknown}")
    if not partial:
        match = _FULL_PROMPT.fullmatch(" ".join(words))
        if match is None:
            raise ValueError(
                f"prompt {text!r} does not follow 'a <color> <shape> at the <position> on a <background> "
                "background'; pass partial=True to read prompts that name fewer attributes"
            )
        try:
            return Attributes(**match.groupdict())
        except ValueError as err:
            raise ValueError(f"prompt {text!r}: {err}") from err
    found: dict[str, list[str]] = {name: [] for name in _ATTRIBUTE_VALUES}
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else None
        if word in BACKGROUNDS and following == "background":
            found["background"].append(word)
        elif word in COLORS:
            found["color"].append(word)
        elif word in SHAPES:
            found["shape"].append(word)
        elif word in ("top", "bottom") and following in ("left", "right"):
            found["position"].append(f"{word} {following}")
    doubled = {name: values for name, values in found.items() if len(values) > 1}
    if doubled:
        raise ValueError(f"prompt {text!r} names an attribute more than once: {doubled}")
    return Attributes(**{name: (values[0] if values else None) for name, values in found.items()})


def all_attributes() -> list[Attributes]:
    """All 288 combinations, colour-major in the order of COLORS, SHAPES, POSITIONS, BACKGROUNDS."""
    return list(_all_combinations())


@lru_cache(maxsize=1)
def _all_combinations() -> tuple[Attributes, ...]:
    return tuple(
        Attributes(color, shape, position, background)
        for color in COLORS
        for shape in SHAPES
        for position in POSITIONS
        for background in BACKGROUNDS
    )


def _split_rank(attrs: Attributes) -> str:
    # A salted hash of the prompt: stable across numpy/Python versions, unlike a seeded permutation.
    return hashlib.sha256(f"{SPLIT_SALT}:{prompt(attrs)}".encode()).hexdigest()


@lru_cache(maxsize=len(SPLITS))
def _split_combinations(name: str) -> tuple[Attributes, ...]:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
    combos = _all_combinations()
    n_heldout = round(len(combos) * HELDOUT_FRACTION)
    heldout = set(sorted(combos, key=_split_rank)[:n_heldout])
    return tuple(a for a in combos if (a in heldout) == (name == "heldout"))


def split(name: str) -> list[Attributes]:
    """Deterministic train/held-out split: the 1/8 of combinations with the smallest salted hash are
    held out, in the order of `all_attributes`. Every single attribute value still occurs in train."""
    return list(_split_combinations(name))


def sample_attributes(rng: np.random.Generator, split: str | None = None) -> Attributes:
    """A uniformly drawn combination, from all of them or from one split ('train' or 'heldout')."""
    pool = _all_combinations() if split is None else _split_combinations(split)
    return pool[int(rng.integers(len(pool)))]


def shape_inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points lie inside a shape whose box is [-1, 1]^2 (u right, v down, in units of r)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if shape == "cross":
        in_box = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
        return in_box & ((np.abs(u) <= CROSS_ARM_HALF_WIDTH) | (np.abs(v) <= CROSS_ARM_HALF_WIDTH))
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _subsample_offsets(n_pixels: int) -> np.ndarray:
    """Sub-sample centres of pixels 0..n-1 (pixel i covers [i, i + 1))."""
    return (np.arange(n_pixels * SUPERSAMPLE) + 0.5) / SUPERSAMPLE


@lru_cache(maxsize=256)
def _box_average(n_pixels: int) -> np.ndarray:
    """(n, n * SUPERSAMPLE) matrix averaging each pixel's sub-samples: the box downsampling, done as a
    matrix product because that is ~3x faster than a reshaped mean on these small grids."""
    return np.kron(np.eye(n_pixels), np.full((1, SUPERSAMPLE), 1.0 / SUPERSAMPLE))


def shape_coverage(shape: str, box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """Fraction of each pixel of an HxW grid covered by `shape` fitted to box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    rx, ry = (x1 - x0) / 2.0, (y1 - y0) / 2.0
    u = (_subsample_offsets(width) - (x0 + rx)) / rx
    v = (_subsample_offsets(height) - (y0 + ry)) / ry
    inside = shape_inside(shape, u[None, :], v[:, None]).astype(np.float64)
    return _box_average(height) @ inside @ _box_average(width).T


def sample_placement(attrs: Attributes, rng: np.random.Generator, size: int = REFERENCE_SIZE) -> Placement:
    """Centre jittered around the middle of the named quadrant, radius uniform in RADIUS_RANGE (scaled)."""
    _require_complete(attrs)
    scale = size / REFERENCE_SIZE
    column, row = POSITIONS[attrs.position]
    jitter = rng.uniform(-CENTER_JITTER, CENTER_JITTER, size=2) * scale
    radius = float(rng.uniform(*RADIUS_RANGE)) * scale
    quadrant_middle = size / 4.0
    return Placement(
        cx=(2 * column + 1) * quadrant_middle + float(jitter[0]),
        cy=(2 * row + 1) * quadrant_middle + float(jitter[1]),
        radius=radius,
    )


def draw(attrs: Attributes, placement: Placement, size: int = REFERENCE_SIZE) -> np.ndarray:
    """Render attrs at an explicit placement: uint8 HxWx3, anti-aliased by coverage blending."""
    _require_complete(attrs)
    background = np.asarray(BACKGROUNDS[attrs.background], dtype=np.float32)
    color = np.asarray(COLORS[attrs.color], dtype=np.float32)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = background
    # Only the pixels under the shape's box are computed: that is what keeps 25k renders to seconds.
    r = placement.radius
    left, top = max(int(np.floor(placement.cx - r)), 0), max(int(np.floor(placement.cy - r)), 0)
    right, bottom = min(int(np.ceil(placement.cx + r)), size), min(int(np.ceil(placement.cy + r)), size)
    box = (placement.cx - r - left, placement.cy - r - top, placement.cx + r - left, placement.cy + r - top)
    coverage = shape_coverage(attrs.shape, box, bottom - top, right - left)
    image[top:bottom, left:right] += coverage[..., None] * (color - background)
    return np.rint(image).astype(np.uint8)


def render(attrs: Attributes, rng: np.random.Generator, size: int = REFERENCE_SIZE) -> np.ndarray:
    """A random instance of attrs (uint8 HxWx3); the same rng state gives the same image."""
    return draw(attrs, sample_placement(attrs, rng, size), size)


def render_batch(attrs: list[Attributes], rng: np.random.Generator, size: int = REFERENCE_SIZE) -> np.ndarray:
    """Render a list of attributes into one uint8 BxHxWx3 array."""
    if not attrs:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([render(a, rng, size) for a in attrs])
