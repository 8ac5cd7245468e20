"""The toy world's judge as rewards: one 0/1 reward per attribute, and ``toy_all_correct``.

``toy_<attribute>`` is 1 when the judge (:func:`imgpref.toy.judge.judge_batch`) reads that attribute of
the prompt in the image; ``toy_all_correct`` is 1 when every attribute the prompt names is right.
Several toy rewards of one run share one judge pass per batch (the last batch's verdict is kept).
"""

from __future__ import annotations

import weakref

import torch

#: Reward name -> key of judge_batch's result.
TOY_KEYS = {
    "toy_color": "color",
    "toy_shape": "shape",
    "toy_position": "position",
    "toy_background": "background",
    "toy_all_correct": "all_correct",
}


class _JudgeCache:
    """The verdict of the last (images, prompts) judged, so five toy rewards cost one judge pass."""

    def __init__(self) -> None:
        self._images: weakref.ref | None = None
        self._version = -1
        self._prompts: tuple[str, ...] = ()
        self._verdict: dict | None = None

    def verdict(self, images: torch.Tensor, prompts: list[str]) -> dict:
        from imgpref.toy.judge import judge_batch

        same = (
            self._images is not None
            and self._images() is images
            and images._version == self._version
            and tuple(prompts) == self._prompts
        )
        if not same:
            self._verdict = judge_batch(images.detach().float().cpu().clamp(0, 1), list(prompts))
            self._images, self._version, self._prompts = weakref.ref(images), images._version, tuple(prompts)
        return self._verdict


_CACHE = _JudgeCache()


def make_toy_reward(name: str):
    """Factory of ``toy_color``, ``toy_shape``, ``toy_position``, ``toy_background``, ``toy_all_correct``.

    Prompts must be toy-world prompts (an unknown word is an error from the judge, never a silent 0).
    """
    if name not in TOY_KEYS:
        raise ValueError(f"{name!r} is not a toy reward; choose one of {', '.join(TOY_KEYS)}")
    key = TOY_KEYS[name]

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        verdict = _CACHE.verdict(images, prompts)
        return {name: torch.from_numpy(verdict[key].astype("float32"))}

    return reward
