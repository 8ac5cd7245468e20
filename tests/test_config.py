"""Config loading: YAML + dotted overrides into dataclasses, with errors that name the key and the fix."""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest

from imgpref.config import ConfigError, load_config, require_min, save_config
from imgpref.models.settings import LoraSettings, ModelSettings


@dataclass
class Train:
    lr: float = 1e-4
    steps: int = 10
    schedule: Literal["constant", "linear"] = "constant"
    resume: bool = True
    judge: Literal["auto", "on", "off"] = "auto"


@dataclass
class Root:
    model: ModelSettings = field(default_factory=ModelSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: Train = field(default_factory=Train)
    name: str | None = None


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_merge(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1e-3\n  steps: 5\nlora:\n  rank: 8\n")
    cfg = load_config(Root, path, ["train.steps=7", "lora.target_modules=[to_q, to_k]", "name=run1"])
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7
    assert cfg.lora.rank == 8 and cfg.lora.target_modules == ["to_q", "to_k"]
    assert cfg.name == "run1"
    assert cfg.model.family == "flux"


def test_yaml_booleans_give_on_off_choices_their_word(tmp_path):
    """YAML 1.1 reads ``off`` as False: a choice spelled ``off`` gets its word back, in files and overrides."""
    assert load_config(Root, None, ["train.judge=off"]).train.judge == "off"
    assert load_config(Root, write(tmp_path, "train:\n  judge: on\n")).train.judge == "on"
    with pytest.raises(ConfigError, match="'train.schedule' must be one of 'constant', 'linear'; got True"):
        load_config(Root, None, ["train.schedule=yes"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Root, None, ["train.schedule=linear", "lora.alpha=32"])
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Root, saved) == cfg


def test_unknown_key_names_key_and_allowed_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Root, write(tmp_path, "train:\n  lrr: 1e-3\n"))
    message = str(err.value)
    assert "'train.lrr'" in message and "did you mean 'lr'" in message
    assert "lr, steps, schedule, resume" in message and "c.yaml" in message


def test_unknown_override_key_blames_the_set_argument_and_finds_the_key_in_any_section(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Root, write(tmp_path, "train:\n  lr: 1e-3\n"), ["lora.lr=1e-4"])
    message = str(err.value)
    assert message.startswith("--set 'lora.lr=1e-4': unknown key 'lora.lr' (did you mean 'train.lr'?)")
    assert "c.yaml" not in message  # the file is fine: the --set argument is wrong
    with pytest.raises(ConfigError, match="'train.step' \\(did you mean 'train.steps'\\?\\)"):
        load_config(Root, None, ["train.step=3"])
    # Keys inside a value (a mapping) are checked when the config is built, not by the --set check.
    assert load_config(Root, None, ["lora.target_modules=[to_q]"]).lora.target_modules == ["to_q"]


def test_unknown_override_section():
    with pytest.raises(
        ConfigError, match="unknown key 'optim.lr' .did you mean 'train.lr'.*allowed keys at the top level"
    ):
        load_config(Root, None, ["optim.lr=1"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"'train.steps' must be int, got 'many' \(str\)"):
        load_config(Root, None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"'train.resume' must be bool"):
        load_config(Root, None, ["train.resume=3"])


def test_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match="'train.schedule' must be one of 'constant', 'linear'; got 'cosine'"):
        load_config(Root, None, ["train.schedule=cosine"])


def test_post_init_validation_names_section():
    with pytest.raises(ConfigError, match="section 'lora'.*rank must be a positive integer"):
        load_config(Root, None, ["lora.rank=0"])
    with pytest.raises(ConfigError, match="model.family must be one of flux, flux-kontext"):
        load_config(Root, None, ["model.family=dalle"])


def test_lower_bounds_name_the_first_bad_field_and_its_value():
    train = Train(lr=-1.0, steps=0)
    require_min("train", train, 0, "steps")  # 0 >= 0
    with pytest.raises(ValueError, match=r"^train.steps must be > 0 \(0 = off\), got 0$"):
        require_min("train", train, 0, "steps", strict=True, note="0 = off")
    with pytest.raises(ValueError, match=r"^train.lr must be >= 0, got -1.0$"):
        require_min("train", train, 0, "lr", "steps")
    with pytest.raises(ValueError, match="train.lr must be >= 0, got nan"):
        require_min("train", Train(lr=float("nan")), 0, "lr")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(Root, tmp_path / "nope.yaml")


def test_bad_yaml_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Root, write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(Root, None, ["train.steps"])


def test_recipe_configs_load_without_torch_diffusers_or_scipy():
    """A typo in a config is reported in a fraction of a second: the DPO, sweep and pair configs (and the
    model, LoRA and guard sections) import none of the heavy libraries, which load with the job."""
    code = (
        "import sys\n"
        "import imgpref.train.dpo_config, imgpref.sweep.config, pipelines.pairs.config, imgpref.models\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'peft', 'transformers', 'scipy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_config_choices_and_registry_data_match_the_code_they_stand_for():
    from imgpref import advantages, losses
    from imgpref.models import FAMILIES, get_family
    from imgpref.models.registry import REFERENCE_FAMILIES
    from imgpref.train.dpo_config import DPOSettings
    from imgpref.train.grpo_config import GRPOSettings

    assert typing.get_args(typing.get_type_hints(DPOSettings)["convention"]) == losses.CONVENTIONS
    assert typing.get_args(typing.get_type_hints(GRPOSettings)["advantage"]) == advantages.MODES
    assert {name for name in FAMILIES if get_family(name).takes_reference_image} == REFERENCE_FAMILIES
