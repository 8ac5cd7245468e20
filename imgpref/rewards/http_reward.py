"""``http``: a reward computed by another process (a model that needs its own environment).

Each call POSTs one JSON document to ``url``::

    {"prompts": [str, ...], "images": ["<base64 PNG>", ...]}

holding exactly the batch's images (8-bit PNG, encoded in memory) and prompts, nothing else: no
metadata, no file paths, no local files. The server answers ``{"rewards": {name: [float, ...]}}``
or ``{"scores": [float, ...]}`` (one value per image). Requests have a timeout; a failure, a wrong
length or a non-finite value is an error that names the URL. Only ``http``/``https`` URLs are allowed.
"""

from __future__ import annotations

import base64
import io
import json
import math
import urllib.error
import urllib.parse
import urllib.request

import torch

#: Seconds to wait for the reward server's answer by default.
DEFAULT_TIMEOUT = 60.0


def encode_png(image: torch.Tensor) -> str:
    """One image in [0, 1] (3×H×W) as a base64 string of an 8-bit PNG."""
    from PIL import Image

    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def make_http_reward(
    name: str, url: str = "", timeout: float = DEFAULT_TIMEOUT, key: str = "", headers: dict | None = None
):
    """Factory of ``http``: POST to ``url``; ``key`` picks ``rewards[key]`` of the answer (default: the
    answer's ``scores``, or its only reward); ``headers`` are extra HTTP headers (e.g. authorisation)."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"http reward: params.url must be an http:// or https:// URL, got {url!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"http reward: timeout must be > 0 seconds, got {timeout!r}")
    extra = {str(k): str(v) for k, v in (headers or {}).items()}

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        body = json.dumps({"prompts": list(prompts), "images": [encode_png(im) for im in images]}).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **extra}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read().decode())
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as err:
            raise RuntimeError(f"http reward: POST {url} failed: {err}") from err
        values = _pick(answer, key, url)
        if len(values) != len(prompts):
            raise RuntimeError(f"http reward: {url} returned {len(values)} values for {len(prompts)} images")
        return {name: torch.tensor([float(v) for v in values], dtype=torch.float32)}

    return reward


def _pick(answer: object, key: str, url: str) -> list:
    if isinstance(answer, dict) and not key and isinstance(answer.get("scores"), list):
        return answer["scores"]
    rewards = answer.get("rewards") if isinstance(answer, dict) else None
    if isinstance(rewards, dict):
        if key and isinstance(rewards.get(key), list):
            return rewards[key]
        if not key and len(rewards) == 1:
            return next(iter(rewards.values()))
    wanted = f'{{"rewards": {{"{key}": [...]}}}}' if key else '{"scores": [...]} or one entry in "rewards"'
    raise RuntimeError(f"http reward: {url} answered {str(answer)[:200]!r}; expected {wanted}")
