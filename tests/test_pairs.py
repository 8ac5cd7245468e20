"""The self-play pair generator: corruptions, strategies, resume, processes, datasets loading, quality.

Generation runs on the toy ``micro`` model (``toy_micro`` fixture) or the families' tiny random-init
pipelines, with few steps, so the whole file stays within about a minute of CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.artifacts.images import to_rgb_uint8
from imgpref.config import ConfigError, load_config
from imgpref.models.base import FamilyAdapter, ModelNotFoundError
from imgpref.models.flux import FluxAdapter
from imgpref.toy import world
from pipelines.pairs import corruptions as corr
from pipelines.pairs.conditioning import Conditioning
from pipelines.pairs.config import PairsConfig
from pipelines.pairs.errors import PairsError
from pipelines.pairs.generate import generate_pairs, merge_rank_files
from pipelines.pairs.metadata import METADATA_FILE, read_jsonl
from pipelines.pairs.strategies import rank_candidates

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "pairs"
TOY_ATTRS = world.Attributes("red", "triangle", "top left", "white")
FIELDS = ("prompt", "cfg_scale", "num_steps", "reference", "attributes", "class_word")
#: Fast generation settings for tests that check plumbing, not image quality.
FAST = ["generation.steps=4", "report.t_draws=1"]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and idle OpenMP threads spin on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_config(*overrides: str, path: str | None = None) -> PairsConfig:
    extra = [f"model.path={path}"] if path is not None else []
    return load_config(PairsConfig, None, [*extra, *overrides])


def run(config: PairsConfig, out: Path, **kwargs) -> dict:
    return generate_pairs(config, out, progress=False, **{"rank": 0, "world_size": 1, **kwargs})


def folder_bytes(out: Path) -> dict[str, bytes]:
    """Metadata and images of a dataset folder (everything a consumer reads)."""
    files = [out / METADATA_FILE, *sorted((out / "images").glob("*.png"))]
    return {str(f.relative_to(out)): f.read_bytes() for f in files}


# ------------------------------------------------------------------------------------- corruptions


def toy_cond(reference: bool = False) -> Conditioning:
    ref = world.render(TOY_ATTRS, np.random.default_rng(0)) if reference else None
    return Conditioning(world.prompt(TOY_ATTRS), 3.0, 16, reference=ref, attributes=TOY_ATTRS)


def changed(a: Conditioning, b: Conditioning) -> set[str]:
    def same(x, y):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            return isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.array_equal(x, y)
        return x == y

    return {f for f in FIELDS if not same(getattr(a, f), getattr(b, f))}


PROMPT_FIELDS = {"prompt", "attributes"}


@pytest.mark.parametrize(
    ("name", "params", "fields"),
    [
        ("generic_prompt", {}, PROMPT_FIELDS),
        ("drop_attributes", {"names": ["color", "background"]}, PROMPT_FIELDS),
        ("swap_attributes", {"names": ["color", "position"]}, PROMPT_FIELDS),
        ("token_dropout", {"p": 0.5}, PROMPT_FIELDS),
        ("shuffle_words", {}, PROMPT_FIELDS),
        ("empty_prompt", {}, PROMPT_FIELDS),
        ("low_guidance", {"scale": 1.0}, {"cfg_scale"}),
        ("fewer_steps", {"steps": 4}, {"num_steps"}),
        ("reference_blur", {"radius": 1.5}, {"reference"}),
        ("reference_noise", {"std": 0.1}, {"reference"}),
        ("reference_downscale", {"factor": 4}, {"reference"}),
        ("reference_drop", {}, {"reference"}),
    ],
)
def test_every_corruption_changes_what_it_documents_and_nothing_else(name, params, fields):
    assert set(corr.CORRUPTIONS) >= {name}
    cond = toy_cond(reference=True)
    out, applied = corr.apply_corruptions(cond, [(name, params)], seed=7)
    assert changed(cond, out) == fields
    again, applied_again = corr.apply_corruptions(cond, [(name, params)], seed=7)
    assert changed(out, again) == set() and applied == applied_again  # deterministic from the seed
    assert applied[0]["name"] == name and set(corr.resolve(name, params)) <= set(applied[0]["params"])
    words, new_words = cond.prompt.split(), out.prompt.split()
    if name == "generic_prompt":
        assert out.prompt == "a photo of a triangle" == world.generic_prompt(TOY_ATTRS)
    elif name == "drop_attributes":
        assert out.prompt == "a triangle at the top left"
        assert out.attributes == world.Attributes(None, "triangle", "top left", None)
    elif name == "swap_attributes":
        assert out.attributes.color != "red" and out.attributes.position != "top left"
        assert (out.attributes.shape, out.attributes.background) == ("triangle", "white")
        assert out.prompt == world.prompt(out.attributes)
    elif name == "token_dropout":
        kept = iter(words)
        assert all(any(w == k for k in kept) for w in new_words) and len(new_words) < len(words)
        assert applied[0]["params"]["dropped"]
    elif name == "shuffle_words":
        assert sorted(new_words) == sorted(words) and new_words != words
    elif name == "empty_prompt":
        assert out.prompt == ""
    elif name == "low_guidance":
        assert out.cfg_scale == 1.0
    elif name == "fewer_steps":
        assert out.num_steps == 4
    elif name == "reference_blur":
        edges = lambda a: np.abs(np.diff(a.astype(float), axis=0)).sum()  # noqa: E731
        assert edges(out.reference) < edges(cond.reference)
    elif name == "reference_noise":
        diff = out.reference.astype(float) - cond.reference.astype(float)
        assert 0.05 * 255 < diff.std() < 0.1 * 255  # clipping at 0/255 on the white background removes some
    elif name == "reference_downscale":
        small = Image.fromarray(cond.reference).resize((8, 8), Image.Resampling.BOX)
        assert np.array_equal(out.reference, np.asarray(small.resize((32, 32), Image.Resampling.BILINEAR)))
    elif name == "reference_drop":
        assert out.reference.shape == cond.reference.shape and (out.reference == 128).all()


def test_prompt_corruptions_on_manifest_prompts_and_combinations():
    cond = Conditioning("a photo of sks dog on the beach", 3.0, 16, class_word="dog")
    out, _ = corr.apply_corruptions(cond, [("generic_prompt", {})], seed=0)
    assert out.prompt == "a photo of a dog" and out.attributes is None
    out, applied = corr.apply_corruptions(cond, [("drop_attributes", {"names": ["sks", "beach"]})], seed=0)
    assert out.prompt == "a photo of dog on the" and applied[0]["params"]["dropped"] == ["sks", "beach"]
    # Several corruptions apply in order, each on the previous output.
    out, applied = corr.apply_corruptions(toy_cond(), [("drop_attributes", {}), ("low_guidance", {})], seed=0)
    assert out.prompt == "a triangle at the top left on a white background" and out.cfg_scale == 1.0
    assert [a["name"] for a in applied] == ["drop_attributes", "low_guidance"]
    with pytest.raises(PairsError, match="swap_attributes: prompt 'a photo of sks dog.*not a toy prompt"):
        corr.apply_corruptions(cond, [("swap_attributes", {})], seed=0)
    with pytest.raises(PairsError, match="contains none of"):
        corr.apply_corruptions(cond, [("drop_attributes", {"names": ["cat"]})], seed=0)
    with pytest.raises(PairsError, match="reference_blur.*has none"):
        corr.apply_corruptions(cond, [("reference_blur", {})], seed=0)


def test_corruption_config_errors_name_the_item():
    with pytest.raises(ConfigError, match="unknown corruption 'blurr'; known corruptions: generic_prompt, "):
        make_config("corruptions=[{name: blurr}]")
    with pytest.raises(ConfigError, match="corruption 'low_guidance' has no param 'cfg'; its params: scale"):
        make_config("corruptions=[{name: low_guidance, params: {cfg: 1}}]")
    with pytest.raises(ConfigError, match="corruption 'reference_blur' changes the reference image, but model family "):
        make_config("corruptions=[{name: reference_blur}]")
    with pytest.raises(ConfigError, match="low_guidance scale 3.0 is not below generation.cfg"):
        make_config("corruptions=[{name: low_guidance, params: {scale: 3}}]")
    with pytest.raises(ConfigError, match="strategy generated_vs_corrupted needs at least one corruption"):
        make_config("corruptions=[]")


def test_prompt_source_errors_name_the_file_and_line(tmp_path):
    empty = tmp_path / "prompts.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(PairsError, match=f"prompts.source '{empty}' holds no prompts"):
        run(make_config(f"prompts.source={empty}", path="tiny"), tmp_path / "out")
    with pytest.raises(ConfigError, match="neither toy-train nor toy-heldout nor an existing file"):
        make_config(f"prompts.source={tmp_path / 'missing.txt'}")
    with pytest.raises(ConfigError, match="needs a reference image per prompt, which a text file"):
        make_config(f"prompts.source={empty}", "model.family=flux-kontext", "model.path=tiny")
    manifest = make_manifest(tmp_path / "manifest")
    lines = (manifest / "manifest.jsonl").read_text().splitlines()
    (manifest / "images" / "dog" / "1.png").unlink()
    with pytest.raises(PairsError, match=r"manifest.jsonl:2: image 'images/dog/1.png' not found"):
        run(make_config(f"prompts.source={manifest}", "strategy=gt_vs_generated", path="tiny"), tmp_path / "o2")
    bad = json.loads(lines[0]) | {"file_name": "../outside.png"}
    (manifest / "manifest.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(PairsError, match=r"manifest.jsonl:1: file name '../outside.png' must not contain '..'"):
        run(make_config(f"prompts.source={manifest}", "strategy=gt_vs_generated", path="tiny"), tmp_path / "o3")


# ------------------------------------------------------------------------------------- strategies


def record_generate(monkeypatch, fail_on_call: int | None = None) -> list[dict]:
    """Wrap FamilyAdapter.generate: record each call's prompts, guidance and noise; optionally fail."""
    calls: list[dict] = []
    original = FamilyAdapter.generate

    def wrapped(self, prompts, **kwargs):
        calls.append({"prompts": list(prompts), "cfg": kwargs["cfg_scale"], "noise": kwargs["noise"].clone()})
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise RuntimeError("injected failure")
        return original(self, prompts, **kwargs)

    monkeypatch.setattr(FamilyAdapter, "generate", wrapped)
    return calls


def test_generated_vs_corrupted_uses_the_same_initial_noise_for_both_sides(toy_micro, tmp_path, monkeypatch):
    calls = record_generate(monkeypatch)
    low = "corruptions=[{name: low_guidance, params: {scale: 1.0}}]"
    run(make_config("prompts.n_pairs=3", low, *FAST, path=toy_micro), tmp_path / "low")
    assert [c["cfg"] for c in calls] == [3.0, 1.0]  # guidance differs: one call per side
    assert calls[0]["prompts"] == calls[1]["prompts"]
    assert torch.equal(calls[0]["noise"], calls[1]["noise"])
    assert len({tuple(n.flatten()[:4].tolist()) for n in calls[0]["noise"]}) == 3  # but differs between pairs
    calls.clear()
    run(make_config("prompts.n_pairs=3", *FAST, path=toy_micro), tmp_path / "generic")
    (call,) = calls  # same guidance and steps: winners and losers in one call, pair by pair
    winners, losers = call["prompts"][0::2], call["prompts"][1::2]
    assert losers == [f"a photo of a {p.split()[2]}" for p in winners]
    assert torch.equal(call["noise"][0::2], call["noise"][1::2])
    lines = read_jsonl(tmp_path / "generic" / METADATA_FILE)
    assert [line["guidance"] for line in lines] == [{"chosen": 3.0, "rejected": 3.0}] * 3


def test_resume_after_interruption_gives_the_same_dataset(toy_micro, tmp_path, monkeypatch):
    config = make_config("prompts.n_pairs=6", "generation.batch_size=3", *FAST, path=toy_micro)
    run(config, tmp_path / "full")
    calls = record_generate(monkeypatch, fail_on_call=2)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(config, tmp_path / "resumed")
    assert [line["pair_index"] for line in read_jsonl(tmp_path / "resumed" / METADATA_FILE)] == [0, 1, 2]
    # A PNG without a metadata line (e.g. written just before a crash) is never trusted.
    Image.new("RGB", (32, 32)).save(tmp_path / "resumed" / "images" / "000004_chosen.png")
    calls.clear()
    monkeypatch.undo()
    summary = run(config, tmp_path / "resumed")
    assert (summary["generated"], summary["resumed"]) == (3, 3)
    assert folder_bytes(tmp_path / "resumed") == folder_bytes(tmp_path / "full")
    with pytest.raises(PairsError, match=r"another config \(generation.seed: 0 -> 1\)"):
        run(make_config("prompts.n_pairs=6", "generation.seed=1", *FAST, path=toy_micro), tmp_path / "resumed")
    # A run that failed before its first pair (here: the model folder is missing) holds no pairs, so the
    # corrected config may use the same folder.
    with pytest.raises(ModelNotFoundError):
        run(make_config("prompts.n_pairs=2", *FAST, path=tmp_path / "no-model"), tmp_path / "typo")
    assert run(make_config("prompts.n_pairs=2", *FAST, path=toy_micro), tmp_path / "typo")["generated"] == 2


def test_two_processes_write_the_union_without_duplicates(toy_micro, tmp_path):
    config = make_config("prompts.n_pairs=5", "generation.batch_size=2", *FAST, path=toy_micro)
    out = tmp_path / "two"
    first = run(config, out, rank=1, world_size=2)
    assert first["generated"] == 2 and (out / "metadata.rank1.jsonl").is_file()
    second = run(config, out, rank=0, world_size=2)  # process 0 merges at its end
    assert second["generated"] == 3 and not list(out.glob("metadata.rank*.jsonl"))
    lines = read_jsonl(out / METADATA_FILE)
    assert [line["pair_index"] for line in lines] == [0, 1, 2, 3, 4]
    run(config, tmp_path / "one")
    single = read_jsonl(tmp_path / "one" / METADATA_FILE)
    keys = ("prompt", "seed", "corruption", "chosen_file_name", "rejected_file_name")
    assert [{k: line[k] for k in keys} for line in lines] == [{k: line[k] for k in keys} for line in single]
    assert merge_rank_files(out, config)["kept"] == 5  # merging again changes nothing


def test_folder_loads_with_datasets_imagefolder(toy_micro, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "ds"
    run(make_config("prompts.n_pairs=3", *FAST, path=toy_micro), out)
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 3 and {"chosen", "rejected", "prompt", "corruption", "margin"} <= set(ds.column_names)
    assert isinstance(ds.features["chosen"], datasets.Image) and ds[0]["rejected"].size == (32, 32)
    assert ds[1]["prompt"] == read_jsonl(out / METADATA_FILE)[1]["prompt"]


def test_judge_prefers_the_winner_for_the_generic_prompt_on_toy_micro(toy_micro, tmp_path):
    out = tmp_path / "generic"
    summary = run(make_config("prompts.n_pairs=32", "report.filter_not_better=true", path=toy_micro), out)
    (row,) = summary["quality"]["groups"]
    margin = row["margin"]
    print(
        f"\ntoy micro, generic_prompt, n={row['n']}: winner better {row['winner_better']:.3f}, tie {row['tie']:.3f},"
        f" margin mean {margin['mean']:.4f}, already right {margin['already_right']:.3f}"
    )
    assert row["verdict_source"] == "toy_judge" and row["n"] == 32
    assert row["winner_better"] > 0.5
    kept, filtered = read_jsonl(out / METADATA_FILE), read_jsonl(out / "filtered.jsonl")
    assert len(kept) + len(filtered) == 32 and all(line["winner_better"] for line in kept)
    assert all(f["reason"].startswith(("tie", "loser better")) for f in filtered)
    assert all((out / f["chosen_file_name"]).is_file() for f in filtered)  # images are never deleted
    assert (out / "pair_quality.md").read_text().count("| generated_vs_corrupted | generic_prompt | 32 |") == 1


def test_rank_candidates_takes_the_first_best_and_the_last_worst():
    assert rank_candidates([1, 3, 3, 0, 0]) == (1, 4)
    assert rank_candidates([2, 2, 2]) == (0, 2)  # all equal: two different images, a tie


def test_ranked_generated_pairs_the_best_and_worst_of_the_candidates(toy_micro, tmp_path, monkeypatch):
    calls = record_generate(monkeypatch)
    overrides = ["strategy=ranked_generated", "generation.candidates=3", "prompts.n_pairs=4", *FAST]
    out = tmp_path / "ranked"
    run(make_config(*overrides, path=toy_micro), out)
    (call,) = calls  # every candidate of the batch in one model call
    assert len(call["prompts"]) == 12 and len({tuple(n.flatten()[:4].tolist()) for n in call["noise"]}) == 12
    model = FluxAdapter.from_pretrained(toy_micro)
    for line in read_jsonl(out / METADATA_FILE):
        ranking = line["ranking"]
        assert ranking["source"] == "toy_judge" and len(ranking["scores"]) == len(ranking["seeds"]) == 3
        assert ranking["seeds"][0] == line["seed"]  # candidate 0 is the image other strategies make
        best, worst = rank_candidates(ranking["scores"])
        assert (ranking["chosen_seed"], ranking["rejected_seed"]) == (ranking["seeds"][best], ranking["seeds"][worst])
        assert (line["verdict"]["chosen"], line["verdict"]["rejected"]) == (
            max(ranking["scores"]),
            min(ranking["scores"]),
        )
        # The stored winner is the image its recorded seed makes.
        noise = model.initial_noise(1, 32, 32, ranking["chosen_seed"])
        again = model.generate([line["prompt"]], height=32, width=32, num_steps=4, cfg_scale=3.0, noise=noise)
        stored = np.asarray(Image.open(out / line["chosen_file_name"]), dtype=np.int16)
        assert np.abs(stored - to_rgb_uint8(again[0]).astype(np.int16)).max() <= 1


def test_ranked_generated_needs_a_verdict_and_two_candidates():
    with pytest.raises(ConfigError, match="generation.candidates must be >= 2"):
        make_config("strategy=ranked_generated", "generation.candidates=1")
    with pytest.raises(ConfigError, match="ranked_generated ranks images by the verdict"):
        make_config("strategy=ranked_generated", "report.judge=off")


# ------------------------------------------------------------------------------------- manifests


def make_manifest(folder: Path) -> Path:
    """Two subjects, three images, one with a crop box, written by hand in the documented format."""
    rows = [("dog", "0.png", (200, 40, 40), None), ("dog", "1.png", (180, 60, 30), None)]
    rows.append(("mug", "0.png", (30, 60, 200), [8, 0, 56, 48]))
    lines = []
    for subject, name, colour, box in rows:
        path = folder / "images" / subject / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.full((48, 64, 3), 240, dtype=np.uint8)
        image[12:36, 20:44] = colour  # a flat square around the centre of the (cropped) image
        Image.fromarray(image).save(path)
        line = {"file_name": f"images/{subject}/{name}", "subject": subject, "class_word": subject}
        lines.append(line | {"token": "sks", "prompts": [f"a photo of sks {subject}"], "crop_box": box})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_subject_manifest_with_gt_vs_generated_on_a_tiny_family(tmp_path):
    manifest = make_manifest(tmp_path / "manifest")
    out = tmp_path / "gt"
    overrides = [f"prompts.source={manifest}", "prompts.n_pairs=4", "strategy=gt_vs_generated", *FAST]
    summary = run(make_config(*overrides, path="tiny"), out)
    lines = read_jsonl(out / METADATA_FILE)
    assert [line["prompt"] for line in lines] == ["a photo of sks dog"] * 2 + [
        "a photo of sks mug",
        "a photo of sks dog",
    ]
    assert all(line["corruption"] == [] and line["guidance"] == {"chosen": None, "rejected": 3.0} for line in lines)
    chosen = np.asarray(Image.open(out / lines[2]["chosen_file_name"]))
    assert chosen.shape == (32, 32, 3) and (chosen[16, 16] == (30, 60, 200)).all()  # cropped, fitted GT
    assert lines[0]["winner_better"] is None and lines[0]["margin"] is not None
    assert any("no verdicts" in note for note in summary["quality"]["notes"])


def test_reference_family_stores_the_reference_and_corrupts_it(tmp_path):
    datasets = pytest.importorskip("datasets")
    manifest = make_manifest(tmp_path / "manifest")
    out = tmp_path / "kontext"
    overrides = [f"prompts.source={manifest}", "prompts.n_pairs=3", "model.family=flux-kontext", *FAST]
    blur = "corruptions=[{name: reference_blur, params: {radius: 3}}]"
    run(make_config(*overrides, "strategy=gt_vs_corrupted", blur, path="tiny"), out)
    lines = read_jsonl(out / METADATA_FILE)
    assert lines[0]["reference_file_name"] == "images/000000_reference.png"
    assert lines[0]["corruption"] == [{"name": "reference_blur", "params": {"radius": 3.0}}]
    reference = np.asarray(Image.open(out / lines[0]["reference_file_name"]))
    assert (reference[16, 16] == (180, 60, 30)).all()  # dog 0's reference is the subject's next image
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert {"chosen", "rejected", "reference"} <= set(ds.column_names)


@pytest.mark.parametrize("family", ["flux", "flux-kontext", "qwen-image", "qwen-image-edit", "sd", "sd3"])
def test_every_tiny_family_makes_pairs_with_margins(family, tmp_path):
    from imgpref.models import get_family

    manifest = make_manifest(tmp_path / "manifest")
    takes_reference = get_family(family).takes_reference_image
    chain = "[{name: reference_downscale}, {name: reference_drop}]" if takes_reference else "[{name: shuffle_words}]"
    overrides = [f"prompts.source={manifest}", "prompts.n_pairs=2", f"model.family={family}", f"corruptions={chain}"]
    summary = run(make_config(*overrides, *FAST, path="tiny"), tmp_path / "out")
    lines = read_jsonl(tmp_path / "out" / METADATA_FILE)
    assert summary["generated"] == 2 and all(np.isfinite(line["margin"]) for line in lines)
    assert all((line["reference_file_name"] is not None) == takes_reference for line in lines)


def test_clip_verdicts_from_a_local_open_clip_folder(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    # A tiny random CLIP with the standard tokenizer's vocabulary (what open_clip's tokenizer produces).
    config = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
        },
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    state = open_clip.CLIP(**config["model_cfg"]).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, clip / "open_clip_model.safetensors")
    manifest = make_manifest(tmp_path / "manifest")
    overrides = [f"prompts.source={manifest}", "prompts.n_pairs=3", f"report.clip_path={clip}", *FAST]
    summary = run(make_config(*overrides, path="tiny"), tmp_path / "out")
    (row,) = summary["quality"]["groups"]
    assert row["verdict_source"] == "clip" and row["n_judged"] == 3
    lines = read_jsonl(tmp_path / "out" / METADATA_FILE)
    assert all(isinstance(line["winner_better"], bool) for line in lines)
    with pytest.raises(PairsError, match="must be a local open_clip folder"):
        run(make_config(*overrides[:-3], f"report.clip_path={tmp_path}", *FAST, path="tiny"), tmp_path / "bad")


# ------------------------------------------------------------------------------------- CLI, presets


def test_presets_load(tmp_path):
    manifest = make_manifest(tmp_path / "manifest")
    for preset in sorted(CONFIGS.glob("*.yaml")):
        # Manifest presets name a placeholder folder that users replace with their own.
        uses_manifest = "toy" not in preset.name
        load_config(PairsConfig, preset, [f"prompts.source={manifest}"] if uses_manifest else [])
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"toy_generic_prompt.yaml", "flux_subject_gt.yaml", "kontext_reference_blur.yaml"} <= names


def test_cli_prints_the_resolved_config(tmp_path, capsys):
    from imgpref.cli import main

    preset = CONFIGS / "toy_generic_prompt.yaml"
    assert main(["pairs", "generate", "--config", str(preset), "--set", "prompts.n_pairs=7", "--print-config"]) == 0
    (tmp_path / "shown.yaml").write_text(capsys.readouterr().out)
    assert load_config(PairsConfig, tmp_path / "shown.yaml") == load_config(PairsConfig, preset, ["prompts.n_pairs=7"])


def test_cli_generates_resumes_and_documents_every_corruption(toy_micro, tmp_path, capsys):
    from imgpref.cli import main

    with pytest.raises(SystemExit):
        main(["pairs", "generate", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in corr.CORRUPTIONS)
    preset = CONFIGS / "toy_generic_prompt.yaml"
    args = ["pairs", "generate", "--config", str(preset), "--set", f"model.path={toy_micro}", "--no-progress"]
    args += ["--set", "prompts.n_pairs=2", "--set", "generation.steps=4", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    assert "2 pairs generated" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 pairs generated, 2 already there" in capsys.readouterr().out
    assert main([*args, "--set", "prompts.n_pairs=3"]) == 0  # a larger n_pairs extends the dataset
    assert "1 pairs generated, 2 already there" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "cli2"), "--set", "corruptions=[{name: nope}]"]) == 2
    assert "unknown corruption 'nope'" in capsys.readouterr().err
