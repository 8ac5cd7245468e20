"""Corruptions: named, parameterised, deterministic changes to a pair's conditioning (the loser's side).

Each corruption takes a :class:`~pipelines.pairs.conditioning.Conditioning`, its parameters and a
numpy generator seeded from the pair, and returns a changed copy plus the parameters it used (the
configured ones and what it drew, e.g. the new prompt), which go into ``metadata.jsonl``. Several
corruptions apply in the configured order, each on the previous one's output.

Prompt corruptions change ``prompt`` and, for toy prompts, ``attributes`` (to what the new prompt
names); guidance, sampler and reference corruptions change only ``cfg_scale``, ``num_steps`` or
``reference``. Reference corruptions apply only to reference-conditioned families (``flux-kontext``,
``qwen-image-edit``).
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from imgpref.toy import world
from pipelines.pairs.conditioning import Conditioning
from pipelines.pairs.errors import PairsError
from pipelines.pairs.seeds import STREAM_CORRUPTION, stream

#: Kinds of corruption, by what they change.
KINDS = ("prompt", "guidance", "sampler", "reference")
#: Toy attributes ``drop_attributes`` may drop: the shape is the class, kept by every toy prompt.
DROPPABLE_TOY_ATTRIBUTES = ("color", "position", "background")
#: Values each toy attribute can take (what ``swap_attributes`` draws from).
TOY_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(world.COLORS),
    "shape": world.SHAPES,
    "position": tuple(world.POSITIONS),
    "background": tuple(world.BACKGROUNDS),
}
#: Line width of the corruption list in ``--help``.
HELP_WIDTH = 104
#: Largest 8-bit level: reference images are uint8 and noise is given in units of [0, 1].
MAX_LEVEL = 255.0

Params = dict[str, Any]
ApplyFn = Callable[[Conditioning, Params, np.random.Generator], tuple[Conditioning, Params]]


@dataclass(frozen=True)
class CorruptionDef:
    """One registered corruption."""

    name: str
    kind: str
    apply: ApplyFn
    defaults: Params
    check: Callable[[Params], None] | None = None

    @property
    def doc(self) -> str:
        """The first paragraph of the corruption's docstring (shown by ``--help`` and in errors)."""
        return " ".join(inspect.getdoc(self.apply).split("\n\n")[0].split())


#: Registry: name → corruption.
CORRUPTIONS: dict[str, CorruptionDef] = {}


def register(name: str, kind: str, check: Callable[[Params], None] | None = None, **defaults: Any):
    """Register a corruption function under ``name`` with its default parameters."""

    def wrap(fn: ApplyFn) -> ApplyFn:
        CORRUPTIONS[name] = CorruptionDef(name, kind, fn, defaults, check)
        return fn

    return wrap


# ------------------------------------------------------------------------------------- parameters


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    where = f"corruption {name!r}: param {key!r}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise PairsError(f"{where} must be a list of strings, got {value!r}")
    raise PairsError(f"{where} must be {type(default).__name__}, got {value!r}")


def resolve(name: str, params: Params | None = None) -> Params:
    """Defaults merged with ``params``, type-checked; errors name the corruption and list what is allowed."""
    if name not in CORRUPTIONS:
        raise PairsError(f"unknown corruption {name!r}; known corruptions: {', '.join(CORRUPTIONS)}")
    spec = CORRUPTIONS[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise PairsError(f"corruption {name!r} has no param {unknown[0]!r}; its params: {allowed}")
    out = {key: _coerce(name, key, params.get(key, default), default) for key, default in spec.defaults.items()}
    if spec.check is not None:
        try:
            spec.check(out)
        except ValueError as err:
            raise PairsError(f"corruption {name!r}: {err}") from None
    return out


def check_family(names: Sequence[str], family: str, takes_reference_image: bool) -> None:
    """Refuse reference corruptions for a family that takes no reference image."""
    for name in names:
        if CORRUPTIONS[name].kind == "reference" and not takes_reference_image:
            raise PairsError(
                f"corruption {name!r} changes the reference image, but model family {family!r} takes none; "
                "use a reference-conditioned family (flux-kontext, qwen-image-edit) or another corruption"
            )


def apply_corruptions(
    cond: Conditioning, corruptions: Sequence[tuple[str, Params]], seed: int
) -> tuple[Conditioning, list[dict[str, Any]]]:
    """Apply ``corruptions`` (name, params) in order; each draws from its own stream of the pair ``seed``.

    Returns the corrupted conditioning and ``[{"name", "params"}]`` as written to ``metadata.jsonl``.
    """
    applied = []
    for position, (name, params) in enumerate(corruptions):
        resolved = resolve(name, params)
        cond, used = CORRUPTIONS[name].apply(cond, resolved, stream(seed, STREAM_CORRUPTION, position))
        applied.append({"name": name, "params": used})
    return cond, applied


# ------------------------------------------------------------------------------------- helpers


def _words(text: str) -> list[str]:
    return text.split()


def _with_prompt(cond: Conditioning, prompt: str) -> Conditioning:
    """``cond`` with a new prompt; toy attributes follow what the new prompt names."""
    attributes = cond.attributes
    if attributes is not None:
        try:
            attributes = world.parse_prompt(prompt, partial=True)
        except ValueError:
            attributes = None
    return dataclasses.replace(cond, prompt=prompt, attributes=attributes)


def toy_prompt(attrs: world.Attributes) -> str:
    """A toy prompt naming exactly the attributes set in ``attrs`` (the full template when all are)."""
    if attrs.is_complete:
        return world.prompt(attrs)
    if attrs.shape is None:
        raise PairsError(f"toy attributes {attrs.named()} name no shape; a toy prompt needs one")
    text = f"a {attrs.color} {attrs.shape}" if attrs.color else f"a {attrs.shape}"
    if attrs.position:
        text += f" at the {attrs.position}"
    if attrs.background:
        text += f" on a {attrs.background} background"
    return text


def _need_reference(cond: Conditioning, name: str) -> np.ndarray:
    if cond.reference is None:
        raise PairsError(
            f"corruption {name!r} changes the reference image, but this pair has none; use a "
            "reference-conditioned family (flux-kontext, qwen-image-edit) with a manifest or toy prompts"
        )
    return cond.reference


def _positive(key: str) -> Callable[[Params], None]:
    def check(params: Params) -> None:
        if not params[key] > 0:
            raise ValueError(f"{key} must be > 0, got {params[key]!r}")

    return check


# ------------------------------------------------------------------------------------- prompt


def _check_template(params: Params) -> None:
    if "{class_word}" not in params["template"]:
        raise ValueError(f"template must contain '{{class_word}}', got {params['template']!r}")


@register("generic_prompt", "prompt", check=_check_template, template="a photo of a {class_word}")
def generic_prompt(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Replace the prompt by the class prompt "a photo of a {class_word}".

    The class word is the shape of a toy prompt or the subject manifest's ``class_word``; prompts from
    a text file that are not toy prompts have none (an error).
    """
    cls = cond.known_class
    if cls is None:
        raise PairsError(
            f"generic_prompt: prompt {cond.prompt!r} has no known class word (toy prompts and subject "
            "manifests have one); use drop_attributes with words to drop, or empty_prompt"
        )
    prompt = params["template"].format(class_word=cls)
    return _with_prompt(cond, prompt), {**params, "prompt": prompt}


def _check_names(params: Params) -> None:
    if not params["names"]:
        raise ValueError("names must list at least one attribute (toy) or word to drop")


@register("drop_attributes", "prompt", check=_check_names, names=["color"])
def drop_attributes(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Drop named attributes from the prompt: toy attributes (color, position, background) from toy
    prompts, otherwise the named words (whole words, case-insensitive).

    Names the prompt does not contain are skipped; a prompt that contains none of them is an error.
    """
    names = params["names"]
    if cond.attributes is not None:
        bad = [n for n in names if n not in DROPPABLE_TOY_ATTRIBUTES]
        if bad:
            raise PairsError(
                f"drop_attributes: {bad[0]!r} is not a droppable toy attribute (choose from "
                f"{', '.join(DROPPABLE_TOY_ATTRIBUTES)}; the shape is the class: use generic_prompt for that)"
            )
        named = cond.attributes.named()
        dropped = [n for n in names if n in named]
        prompt = toy_prompt(dataclasses.replace(cond.attributes, **dict.fromkeys(dropped)))
    else:
        lowered = {n.lower() for n in names}
        words = _words(cond.prompt)
        dropped = [w for w in words if w.lower() in lowered]
        prompt = " ".join(w for w in words if w.lower() not in lowered)
    if not dropped:
        raise PairsError(f"drop_attributes: prompt {cond.prompt!r} contains none of {names}; nothing to drop")
    return _with_prompt(cond, prompt), {**params, "dropped": dropped, "prompt": prompt}


def _check_swap(params: Params) -> None:
    if not params["names"] or any(n not in TOY_VALUES for n in params["names"]):
        raise ValueError(f"names must list toy attributes ({', '.join(TOY_VALUES)}), got {params['names']!r}")


@register("swap_attributes", "prompt", check=_check_swap, names=["color"])
def swap_attributes(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Replace each named toy attribute (color, shape, position, background) by another value of the
    same kind, drawn uniformly from the pair seed. Toy prompts only.
    """
    if cond.attributes is None:
        raise PairsError(f"swap_attributes: prompt {cond.prompt!r} is not a toy prompt, so its attributes are unknown")
    values = {}
    for name in params["names"]:
        current = getattr(cond.attributes, name)
        if current is None:
            raise PairsError(f"swap_attributes: prompt {cond.prompt!r} names no {name}")
        others = [v for v in TOY_VALUES[name] if v != current]
        values[name] = others[int(rng.integers(len(others)))]
    prompt = toy_prompt(dataclasses.replace(cond.attributes, **values))
    return _with_prompt(cond, prompt), {**params, "values": values, "prompt": prompt}


def _check_probability(params: Params) -> None:
    if not 0 < params["p"] <= 1:
        raise ValueError(f"p must be in (0, 1], got {params['p']!r}")


@register("token_dropout", "prompt", check=_check_probability, p=0.3)
def token_dropout(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Drop each word of the prompt independently with probability p (may leave the empty prompt)."""
    words = _words(cond.prompt)
    keep = rng.random(len(words)) >= params["p"]
    prompt = " ".join(w for w, k in zip(words, keep, strict=True) if k)
    dropped = [w for w, k in zip(words, keep, strict=True) if not k]
    return _with_prompt(cond, prompt), {**params, "dropped": dropped, "prompt": prompt}


@register("shuffle_words", "prompt")
def shuffle_words(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Shuffle the words of the prompt (a uniform permutation; if it keeps the order, the words are
    rotated by one so the order always changes when it can)."""
    words = _words(cond.prompt)
    order = rng.permutation(len(words))
    shuffled = [words[i] for i in order]
    if shuffled == words and len(set(words)) > 1:
        order = np.roll(np.arange(len(words)), 1)
        shuffled = [words[i] for i in order]
    prompt = " ".join(shuffled)
    return _with_prompt(cond, prompt), {**params, "order": [int(i) for i in order], "prompt": prompt}


@register("empty_prompt", "prompt")
def empty_prompt(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Replace the prompt by the empty prompt (the unconditional model)."""
    return _with_prompt(cond, ""), {**params, "prompt": ""}


# ------------------------------------------------------------------------------------- guidance, sampler


def _check_scale(params: Params) -> None:
    if not params["scale"] >= 1.0:
        raise ValueError(f"scale must be >= 1 (1 = no guidance), got {params['scale']!r}")


@register("low_guidance", "guidance", check=_check_scale, scale=1.0)
def low_guidance(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Sample with classifier-free guidance ``scale`` instead of the configured one (1.0 = no guidance)."""
    return dataclasses.replace(cond, cfg_scale=params["scale"]), dict(params)


def _check_steps(params: Params) -> None:
    if not params["steps"] >= 1:
        raise ValueError(f"steps must be >= 1, got {params['steps']!r}")


@register("fewer_steps", "sampler", check=_check_steps, steps=4)
def fewer_steps(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Sample with ``steps`` sampler steps instead of the configured number."""
    return dataclasses.replace(cond, num_steps=params["steps"]), dict(params)


# ------------------------------------------------------------------------------------- reference image


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))


@register("reference_blur", "reference", check=_positive("radius"), radius=2.0)
def reference_blur(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Gaussian-blur the reference image with ``radius`` (pixels, PIL's GaussianBlur)."""
    ref = _need_reference(cond, "reference_blur")
    blurred = np.asarray(_pil(ref).filter(ImageFilter.GaussianBlur(params["radius"])))
    return dataclasses.replace(cond, reference=blurred), dict(params)


@register("reference_noise", "reference", check=_positive("std"), std=0.1)
def reference_noise(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Add Gaussian noise of standard deviation ``std`` (in units of the [0, 1] pixel range) to the
    reference image, drawn from the pair seed, then clip and quantise to 8 bits."""
    ref = _need_reference(cond, "reference_noise").astype(np.float64)
    noisy = ref + rng.normal(0.0, params["std"] * MAX_LEVEL, size=ref.shape)
    return dataclasses.replace(cond, reference=np.rint(np.clip(noisy, 0, MAX_LEVEL)).astype(np.uint8)), dict(params)


def _check_factor(params: Params) -> None:
    if not params["factor"] > 1:
        raise ValueError(f"factor must be > 1, got {params['factor']!r}")


@register("reference_downscale", "reference", check=_check_factor, factor=4.0)
def reference_downscale(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Downscale the reference image by ``factor`` (box filter) and upscale it back (bilinear): the same
    size with the detail of a ``factor``-times smaller image."""
    ref = _need_reference(cond, "reference_downscale")
    h, w = ref.shape[:2]
    small = _pil(ref).resize(
        (max(1, round(w / params["factor"])), max(1, round(h / params["factor"]))), Image.Resampling.BOX
    )
    restored = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
    return dataclasses.replace(cond, reference=restored), dict(params)


def _check_fill(params: Params) -> None:
    if not 0 <= params["fill"] <= 1:
        raise ValueError(f"fill must be in [0, 1], got {params['fill']!r}")


@register("reference_drop", "reference", check=_check_fill, fill=0.5)
def reference_drop(cond: Conditioning, params: Params, rng: np.random.Generator) -> tuple[Conditioning, Params]:
    """Drop the reference image: replace it by a uniform image of grey level ``fill`` in [0, 1].

    Reference-conditioned pipelines need an image, so "no reference" is one that carries no content;
    mid-grey (0.5) is the zero of the VAE's [-1, 1] input range.
    """
    ref = _need_reference(cond, "reference_drop")
    blank = np.full_like(ref, round(params["fill"] * MAX_LEVEL), dtype=np.uint8)
    return dataclasses.replace(cond, reference=blank), dict(params)


def describe() -> str:
    """One line per corruption: name, parameters with defaults, what it does (for ``--help``)."""
    lines = []
    for spec in CORRUPTIONS.values():
        params = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items())
        lines.append(f"  {spec.name}({params})  [{spec.kind}]")
        lines += textwrap.wrap(
            spec.doc.replace("``", ""), HELP_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines)
