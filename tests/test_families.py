"""Every model family: tiny pipeline generates, LoRA trains only itself, reference = base, save/reload."""

from __future__ import annotations

import pytest
import torch

from imgpref.models import FAMILIES, get_family
from imgpref.models.lora import attach_lora, load_lora, reference_mode, save_lora
from imgpref.models.settings import LoraSettings

SEED = 0
HEIGHT, WIDTH = 32, 48


def _reference_images(model, batch: int) -> torch.Tensor | None:
    if not model.takes_reference_image:
        return None
    return torch.rand(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


def _inputs(model):
    """A fixed noisy batch, its timesteps and conditioning."""
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn((2, *model.latent_shape(HEIGHT, WIDTH)), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0.25, 0.8])
    cond = model.encode_prompts(["a red circle", "a photo of a square"], _reference_images(model, 2))
    return model.schedule.add_noise(x0, noise, t), t, cond, model.schedule.target(x0, noise, t)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return get_family(request.param)


def test_generates_requested_size(family):
    model = family.tiny(SEED)
    images = model.generate(
        ["a red circle"], height=HEIGHT, width=WIDTH, num_steps=2, reference_images=_reference_images(model, 1)
    )
    assert images.shape == (1, 3, HEIGHT, WIDTH)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_latents_round_trip_shape(family):
    model = family.tiny(SEED)
    images = torch.rand(2, 3, HEIGHT, WIDTH)
    latents = model.encode_images(images)
    assert latents.shape == (2, *model.latent_shape(HEIGHT, WIDTH))
    assert model.decode_latents(latents).shape == images.shape


@pytest.mark.parametrize(("rank", "alpha"), [(4, 4.0), (4, 12.0)])
def test_lora_trains_alone_and_reloads(family, rank, alpha, tmp_path):
    model = family.tiny(SEED)
    x_t, t, cond, target = _inputs(model)
    with torch.no_grad():
        base_out = model.predict(x_t, t, cond)
    base_state = {k: v.clone() for k, v in model.denoiser.state_dict().items()}

    params = attach_lora(model, LoraSettings(rank=rank, alpha=alpha, init="gaussian"))
    lora_before = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(model.predict(x_t, t, cond), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    # Base weights untouched, LoRA weights moved.
    state = model.denoiser.state_dict()
    for key, value in base_state.items():
        peft_key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state.get(key, state.get(peft_key)), value), key
    assert any(not torch.equal(a, p) for a, p in zip(lora_before, params, strict=True))

    with torch.no_grad():
        tuned_out = model.predict(x_t, t, cond)
        with reference_mode(model):
            ref_out = model.predict(x_t, t, cond)
    assert not torch.allclose(tuned_out, base_out, atol=1e-4), "training did not change the output"
    assert torch.equal(ref_out, base_out), "adapters disabled must reproduce the base model exactly"

    save_lora(model, tmp_path / "lora")
    fresh = family.tiny(SEED)
    load_lora(fresh, tmp_path / "lora")
    with torch.no_grad():
        reloaded_out = fresh.predict(x_t, t, cond)
    torch.testing.assert_close(reloaded_out, tuned_out, atol=1e-5, rtol=0)
