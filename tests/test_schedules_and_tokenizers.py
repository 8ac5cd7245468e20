"""Schedules against hand-worked values; in-code tokenizers keep every known word whole."""

from __future__ import annotations

import torch

from imgpref.models import tokenizers
from imgpref.schedules import DDPMSchedule, FlowSchedule, expand_like


def test_flow_schedule_hand_values():
    x0 = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    eps = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([0.25, 1.0])
    s = FlowSchedule()
    torch.testing.assert_close(s.add_noise(x0, eps, t), torch.tensor([[0.75, 1.75], [1.0, 1.0]]))
    torch.testing.assert_close(s.target(x0, eps, t), torch.tensor([[-1.0, -1.0], [-2.0, 2.0]]))


def test_ddpm_schedule_hand_values():
    abar = torch.tensor([0.64, 0.36])  # sqrt: 0.8/0.6 and 0.6/0.8
    x0, eps = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    t = torch.tensor([0.0, 1.0])
    eps_s, v_s = DDPMSchedule(abar, "epsilon"), DDPMSchedule(abar, "v_prediction")
    torch.testing.assert_close(eps_s.add_noise(x0, eps, t)[:, 0, 0, 0], torch.tensor([0.8 + 0.6 * 2, 0.6 + 0.8 * 2]))
    torch.testing.assert_close(eps_s.target(x0, eps, t), eps)
    torch.testing.assert_close(v_s.target(x0, eps, t)[:, 0, 0, 0], torch.tensor([0.8 * 2 - 0.6, 0.6 * 2 - 0.8]))


def test_ddpm_steps_are_uniform_for_uniform_t_and_invert_k_over_t_minus_1():
    """Uniform t must draw every integer step alike (the official code's randint(0, T)), endpoints
    included, and t = k/(T − 1), which the DDIM rollout feeds back, must map to exactly k."""
    schedule = DDPMSchedule(torch.linspace(0.999, 0.001, 1000))
    t = (torch.arange(10_000, dtype=torch.float32) + 0.5) / 10_000
    counts = torch.bincount(schedule.model_timestep(t), minlength=1000)
    assert counts.min() == counts.max() == 10
    k = torch.arange(1000)
    torch.testing.assert_close(schedule.model_timestep(k.float() / 999), k)
    assert schedule.model_timestep(torch.tensor([0.0, 1.0])).tolist() == [0, 999]


def test_expand_like_any_rank():
    t = torch.tensor([1.0, 2.0])
    assert expand_like(t, torch.zeros(2, 3)).shape == (2, 1)
    assert expand_like(t, torch.zeros(2, 3, 4, 5, 6)).shape == (2, 1, 1, 1, 1)


def test_tokenizers_keep_words_whole_and_fall_back_to_characters():
    words = ["red", "green", "background", "triangle", "re", "gree"]
    for tok in (tokenizers.clip_tokenizer(words, 16), tokenizers.t5_tokenizer(words, 16)):
        assert tokenizers.check_single_tokens(tok, words) == []
        assert len(tok("zq", add_special_tokens=False)["input_ids"]) >= 2  # unknown word → characters
        assert tok.unk_token_id not in tok("zq xyz", add_special_tokens=False)["input_ids"]
