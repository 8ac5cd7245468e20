"""Artifact detectors, scanner and guard (imgpref.artifacts): known answers on synthetic images."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from imgpref.artifacts.defaults import ArtifactThresholds, GuardSettings
from imgpref.artifacts.diversity import spread, spread_ratio
from imgpref.artifacts.grid import fold_statistic, grid_scores, lattice_points
from imgpref.artifacts.guard import ArtifactGuard
from imgpref.artifacts.inject import add_pattern, darken_gain, desaturate, jpeg_roundtrip, periodic_pattern
from imgpref.artifacts.measure import image_flags, image_scores, measure
from imgpref.artifacts.scan import ScanSettings, scan_folder
from imgpref.artifacts.synthetic import clean_image
from imgpref.artifacts.tone import colorfulness, tone_stats

SIZE = 256


def _pink(seed: int, size: int = SIZE) -> np.ndarray:
    return clean_image("pink", np.random.default_rng(seed), size)


def _flat(value: int = 100, size: int = SIZE) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def _noisy(value: int = 100, size: int = SIZE, sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, (size, size, 3))
    return np.clip(np.rint(value + noise), 0, 255).astype(np.uint8)


def _variant(image: np.ndarray, seed: int) -> np.ndarray:
    """The same picture shifted by 2 px with fresh noise: a harmless redraw of the same seed."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(image, (2, 1), axis=(0, 1)).astype(np.float64) + rng.normal(0, 1.0, image.shape)
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def _flags(image, base=None, jpeg=False):
    return image_flags(
        image_scores(measure(image), None if base is None else measure(base)), ArtifactThresholds(), jpeg
    )


# ------------------------------------------------------------------------------------------- grid


def test_lattice_points_cover_each_frequency_once():
    # Period p has p^2 lattice frequencies; without DC, the 3 self-conjugate ones stand alone and the
    # other p^2 - 4 come in conjugate pairs: (p^2 - 4) / 2 + 3 points in the real FFT's half-plane.
    assert len(lattice_points((8,))) == (64 - 4) // 2 + 3
    points = lattice_points((8, 16))
    assert len(points) == (256 - 4) // 2 + 3
    assert sum(pt.period == 8 for pt in points) == 33  # period 8's points are not counted again for 16


def test_seams_on_a_flat_image_give_the_pattern_rms_and_only_their_period():
    seams = add_pattern(_flat(), "seams", 8, 2, phase=(3, 5))
    result = grid_scores(seams)
    # One-pixel lines every 8 px, rows and columns: a share f = 15/64 of pixels is 2 levels up, so the
    # pattern's rms is 2 sqrt(f (1 - f)) levels.
    share = 15 / 64
    assert result.rms[8] == pytest.approx(2 * math.sqrt(share * (1 - share)), rel=0.02)
    assert result.scores[8] > 50
    assert _flags(seams) == ["grid_p8"]


def test_fold_statistic_is_the_precision_weighted_mean_over_its_null_standard_error():
    # sum_k w_k e_k / sqrt(sum_k w_k), w_k = 1 / n_k^2: equal weights give sum(e) / sqrt(K) ...
    assert fold_statistic([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]) == pytest.approx(2.0)
    # ... and a point measured twice as precisely (n = 1/2, w = 4) counts four times as much.
    assert fold_statistic([3.0, -1.0], [4.0, 1.0]) == pytest.approx((4 * 3.0 - 1.0) / math.sqrt(5.0))
    assert math.isnan(fold_statistic([], []))


def test_fold_statistic_does_not_depend_on_the_noise_level():
    # A ratio of energies: the same noise at 4x the amplitude gives the same score, up to 8-bit rounding
    # (which adds fresh noise of 1/12 level^2 and moves the score by ~0.1 null standard deviations).
    unit = np.random.default_rng(4).normal(0, 1, (SIZE, SIZE, 3))
    quiet, loud = (grid_scores(np.clip(np.rint(128 + s * unit), 0, 255).astype(np.uint8)) for s in (8, 32))
    for p in (8, 16):
        assert loud.folds[p] == pytest.approx(quiet.folds[p], abs=0.25)
        assert abs(quiet.folds[p]) < ArtifactThresholds().grid_fold


def test_fold_statistic_grows_with_the_pattern_energy():
    # Seams of a levels are exactly a x (seams of 1 level): far above the noise, the score is an energy and
    # doubling the amplitude quadruples it (the noise's cross term keeps it from being exact).
    noisy = _noisy(sigma=6.0, seed=2)
    weak, strong = (grid_scores(add_pattern(noisy, "seams", 8, a, phase=(2, 3))).folds[8] for a in (3, 6))
    assert weak > 3 * ArtifactThresholds().grid_fold
    assert strong / weak == pytest.approx(4.0, rel=0.15)


def test_fold_statistic_finds_a_faint_tile_in_1_over_f_noise_that_the_pooled_ratio_misses():
    # 1/f noise with pixel-scale texture hides a 2/255 tile of 16 px from the few largest peak ratios,
    # but the tile's energy, spread over ~100 lattice points, adds up in the fold statistic.
    clean = _pink(7)
    tiled = add_pattern(
        clean, "tile", 16, 2, phase=(3, 5), sign=1 if clean.mean() < 127.5 else -1, rng=np.random.default_rng(7)
    )
    scores, t = image_scores(measure(tiled)), ArtifactThresholds()
    assert max(scores["grid_p8"], scores["grid_p16"]) < t.grid_ratio
    assert scores["grid_p16_fold"] > 2 * t.grid_fold
    assert _flags(clean) == [] and "grid_p16" in _flags(tiled)


def test_a_period_16_checkerboard_trips_period_16_only():
    checker = add_pattern(_noisy(seed=1), "checkerboard", 16, 2, phase=(0, 0))
    scores = image_scores(measure(checker))
    assert scores["grid_p16"] > 2 * ArtifactThresholds().grid_ratio
    assert _flags(checker) == ["grid_p16"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_images_do_not_trip_the_grid(seed):
    for family in ("pink", "texture", "gradient", "toy"):
        image = clean_image(family, np.random.default_rng(seed), SIZE)
        assert _flags(image) == [], family


@pytest.mark.parametrize("quality", [75, 85, 95])
def test_jpeg_compression_alone_does_not_trip_the_grid_flag(quality):
    for family in ("pink", "texture", "gradient", "toy"):
        image = jpeg_roundtrip(clean_image(family, np.random.default_rng(7), SIZE), quality)
        assert _flags(image, jpeg=True) == [], (family, quality)


def test_differential_mode_cancels_a_pattern_present_in_base_and_tuned():
    rng = np.random.default_rng(3)
    clean = clean_image("texture", np.random.default_rng(3), SIZE)
    base = add_pattern(clean, "tile", 8, 6, phase=(1, 2), rng=np.random.default_rng(9))
    tuned = add_pattern(_variant(clean, 4), "tile", 8, 6, phase=(1, 2), rng=np.random.default_rng(9))
    assert "grid_p8" in _flags(tuned)  # alone, the pattern is plain to see
    assert _flags(tuned, base) == []  # against a base that has it too, it cancels
    fresh = add_pattern(_variant(clean, 4), "seams", 8, 4, phase=(0, 0), sign=int(rng.choice([-1, 1])))
    assert _flags(fresh, clean) == ["grid_p8"]  # a pattern the base lacks still trips


def test_images_too_small_for_a_period_score_nan_and_never_trip():
    scores = image_scores(measure(add_pattern(_flat(size=64), "seams", 16, 8)))
    assert math.isnan(scores["grid_p16"])
    assert "grid_p16" not in image_flags(scores, ArtifactThresholds())


def test_periodic_pattern_rejects_unknown_kinds_and_tile_without_rng():
    with pytest.raises(ValueError, match="unknown pattern kind"):
        periodic_pattern((16, 16), "stripes", 8, 1)
    with pytest.raises(ValueError, match="needs rng"):
        periodic_pattern((16, 16), "tile", 8, 1)


# ------------------------------------------------------------------------------------------- tone


def test_tone_statistics_known_answers():
    half = _flat(0, 64)
    half[:, 32:] = 255
    stats = tone_stats(half)
    assert stats["mean_luma"] == pytest.approx(0.5)
    assert stats["crushed_black"] == pytest.approx(0.5)
    assert stats["clipped_white"] == pytest.approx(0.5)
    assert stats["contrast"] == pytest.approx(0.5)
    assert (stats["luma_p01"], stats["luma_p99"]) == (pytest.approx(0.0), pytest.approx(1.0))
    # Hasler-Suesstrunk: gray has no colour; pure red has rg = 255, yb = 127.5 everywhere, so only the
    # mean term 0.3 * hypot(255, 127.5) remains.
    assert colorfulness(_flat(90, 8)) == 0.0
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert colorfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))


def test_darkening_and_desaturation_are_measured_and_flagged_against_the_base():
    base = _pink(5)
    darker = image_scores(measure(darken_gain(base, 0.9)), measure(base))
    assert darker["mean_luma_change"] == pytest.approx(-0.10, abs=0.005)
    assert darker["colorfulness_change"] == pytest.approx(-0.10, abs=0.005)  # chroma scales with the gain
    assert darker["saturation_change"] == pytest.approx(0.0, abs=0.005)  # ... but it looks no grayer
    assert image_flags(darker, ArtifactThresholds()) == ["darker"]
    gray = image_scores(measure(desaturate(base, 1.0)), measure(base))
    assert gray["colorfulness_change"] == pytest.approx(-1.0, abs=0.02)
    assert gray["saturation_change"] == pytest.approx(-1.0, abs=0.02)
    assert "desaturated" in image_flags(gray, ArtifactThresholds())
    assert _flags(_variant(base, 6), base) == []  # a harmless redraw trips nothing


def test_tone_is_not_flagged_without_a_reference():
    assert _flags(darken_gain(_pink(5), 0.5)) == []


# ------------------------------------------------------------------------------------------- diversity


def test_spread_known_answers():
    assert spread([_flat(10, 32), _flat(10, 32)]) == 0.0
    assert spread([_flat(0, 32), _flat(51, 32)]) == pytest.approx(0.2)
    assert math.isnan(spread([_flat(0, 32)]))
    ratio, parts = spread_ratio([_flat(0, 32), _flat(51, 32)], [_flat(0, 32), _flat(102, 32)])
    assert ratio == pytest.approx(0.5)
    assert parts == {"spread": pytest.approx(0.2), "spread_base": pytest.approx(0.4)}


# ------------------------------------------------------------------------------------------- scanner


def _write(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def test_scanner_skips_unreadable_files_handles_mixed_sizes_and_writes_a_report(tmp_path):
    from imgpref.artifacts.report import write_report

    images, out = tmp_path / "images", tmp_path / "out"
    _write(images / "clean.png", _pink(11, 320)[:, :256])
    _write(images / "nested" / "grid.png", add_pattern(_pink(12, 192), "seams", 8, 4, sign=-1))
    _write(images / "photo.jpg", jpeg_roundtrip(_pink(13, 128), 90), quality=90)
    (images / "broken.png").write_bytes(b"not a png at all")
    (images / "empty.jpg").write_bytes(b"")
    (images / "notes.txt").write_text("not an image")

    scan = scan_folder(images, settings=ScanSettings())
    by_file = {entry["file"]: entry for entry in scan["images"]}
    assert sorted(by_file) == ["clean.png", "nested/grid.png", "photo.jpg"]
    assert sorted(s["file"] for s in scan["skipped"]) == ["broken.png", "empty.jpg"]
    assert by_file["nested/grid.png"]["flags"] == ["grid_p8"]
    assert by_file["clean.png"]["flags"] == [] and by_file["clean.png"]["size"] == [256, 320]
    assert by_file["photo.jpg"]["format"] == "JPEG" and by_file["photo.jpg"]["flags"] == []
    assert scan["summary"] == {"images": 3, "skipped": 2, "flagged": 1, "by_flag": {"grid_p8": 1}}
    json.dumps(scan, allow_nan=False)  # NaN scores are written as null

    out.mkdir()
    md, page = write_report(scan, out)
    text = md.read_text()
    assert "nested/grid.png" in text and "broken.png" in text and "spectrum.png" in text
    assert (out / "spectrum.png").is_file() and (out / "thumbs" / "000.png").is_file()
    assert "thumbs/000_detail.png" in page.read_text()


def test_scanner_matches_references_by_relative_path(tmp_path):
    tuned_dir, base_dir = tmp_path / "tuned", tmp_path / "base"
    clean = _pink(21)
    _write(base_dir / "a" / "x.png", clean)
    _write(tuned_dir / "a" / "x.png", darken_gain(_variant(clean, 1), 0.85))
    _write(tuned_dir / "orphan.png", _pink(22, 128))
    other = clean_image("texture", np.random.default_rng(23), 320)
    _write(base_dir / "resized.png", other)
    _write(tuned_dir / "resized.png", np.asarray(Image.fromarray(other).resize((256, 256), Image.LANCZOS)))
    scan = scan_folder(tuned_dir, base_dir)
    by_file = {entry["file"]: entry for entry in scan["images"]}
    assert by_file["a/x.png"]["reference"] == "a/x.png"
    assert "darker" in by_file["a/x.png"]["flags"]
    assert by_file["resized.png"]["reference"] == "resized.png"  # a reference of another size is fine
    assert not any(f.startswith("grid") for f in by_file["resized.png"]["flags"])
    assert by_file["orphan.png"]["reference"] is None and "scored alone" in by_file["orphan.png"]["note"]
    assert scan["unmatched"] == ["orphan.png"]


def test_scan_command_writes_scan_json_and_honours_strict(tmp_path, capsys):
    from imgpref.artifacts.cli import add_artifacts_commands
    from imgpref.config import ConfigError

    parser = argparse.ArgumentParser(prog="imgpref")
    add_artifacts_commands(parser.add_subparsers(dest="command"))
    images = tmp_path / "images"
    _write(images / "grid.png", add_pattern(_flat(120, 128), "checkerboard", 8, 3))

    args = parser.parse_args(["artifacts", "scan", str(images), "--out", str(tmp_path / "o1"), "--strict"])
    assert args.handler(args) == 1
    scan = json.loads((tmp_path / "o1" / "scan.json").read_text())
    assert scan["images"][0]["file"] == "grid.png" and scan["images"][0]["flags"] == ["grid_p8"]
    assert (tmp_path / "o1" / "report.html").is_file()

    args = parser.parse_args(
        ["artifacts", "scan", str(images), "--out", str(tmp_path / "o2"), "--set", "grid_fold=1e9"]
    )
    assert args.handler(args) == 0
    assert "0 flagged" in capsys.readouterr().out

    args = parser.parse_args(["artifacts", "scan", str(images), "--out", str(tmp_path / "o3"), "--set", "grid_ratoi=5"])
    with pytest.raises(ConfigError, match="grid_ratio"):
        args.handler(args)


# ------------------------------------------------------------------------------------------- guard


def _validation_set(n=4, size=SIZE):
    """Toy-world renders: flat regions where a pattern of a few levels shows, like a generated image's."""
    return [clean_image("toy", np.random.default_rng(100 + i), size) for i in range(n)]


def test_guard_stops_a_run_whose_samples_carry_an_injected_pattern():
    base = _validation_set()
    guard = ArtifactGuard(GuardSettings(every=10, action="stop"))
    assert guard.due(10) and not guard.due(15)

    healthy = guard.check(10, [_variant(x, i) for i, x in enumerate(base)], base)
    assert healthy.action == "continue" and healthy.passed and not healthy.should_stop
    assert healthy.metrics["artifacts/passed"] == 1.0

    seamed = [add_pattern(_variant(x, i), "seams", 8, 3, phase=(0, 0), sign=-1) for i, x in enumerate(base)]
    decision = guard.check(20, seamed, base)
    assert decision.action == "stop" and decision.should_stop
    assert decision.tripped == ("grid_p8",)
    assert decision.metrics["artifacts/grid_p8_flagged_fraction"] == 1.0
    assert decision.metrics["artifacts/grid_p8_excess_median"] > ArtifactThresholds().grid_excess_ratio
    assert "grid_p8" in decision.message


def test_guard_restores_the_last_checkpoint_that_passed_after_patience():
    base = _validation_set()
    good = [_variant(x, i) for i, x in enumerate(base)]
    dark = [darken_gain(x, 0.8) for x in good]
    guard = ArtifactGuard(GuardSettings(every=1, action="restore", patience=2))
    assert guard.check(100, good, base).passed
    guard.note_checkpoint(100)
    assert guard.check(200, good, base).passed  # passed, but no checkpoint saved at 200
    first = guard.check(300, dark, base)
    assert first.action == "warn" and first.tripped == ("darker",)  # a gain darkens; colour per luma stays
    state = guard.state_dict()
    resumed = ArtifactGuard(GuardSettings(every=1, action="restore", patience=2))
    resumed.load_state_dict(json.loads(json.dumps(state)))
    second = resumed.check(400, dark, base)
    assert second.action == "restore" and second.restore_step == 100
    assert second.metrics["artifacts/mean_luma_change"] == pytest.approx(-0.2, abs=0.01)


def test_guard_detects_collapse_across_seeds_and_takes_tensors():
    torch = pytest.importorskip("torch")
    base = _validation_set(n=6, size=64)
    groups = [0, 0, 0, 1, 1, 1]
    collapsed = [base[0]] * 3 + [base[3]] * 3  # every seed of a prompt gives that prompt's first image
    as_tensor = torch.from_numpy(np.stack(collapsed)).permute(0, 3, 1, 2).float() / 255.0
    decision = ArtifactGuard(GuardSettings(action="warn")).check(5, as_tensor, base, groups=groups)
    assert "collapse" in decision.tripped and decision.action == "warn" and not decision.should_stop
    assert decision.metrics["artifacts/diversity_ratio"] == pytest.approx(0.0, abs=0.01)
    assert "artifacts/grid_p16_excess_median" not in decision.metrics  # 64 px is too small for period 16
    json.dumps(decision.metrics, allow_nan=False)


def test_guard_settings_load_from_config_overrides():
    from imgpref.config import ConfigError, load_config

    settings = load_config(GuardSettings, None, ["action=restore", "periods=[8]", "thresholds.grid_ratio=6"])
    assert (settings.action, settings.periods, settings.thresholds.grid_ratio) == ("restore", (8,), 6.0)
    with pytest.raises(ConfigError, match="'warn', 'stop', 'restore'"):
        load_config(GuardSettings, None, ["action=explode"])


def test_guard_rejects_mismatched_sets_and_bad_settings():
    guard = ArtifactGuard()
    with pytest.raises(ValueError, match="one base image per tuned image"):
        guard.check(1, _validation_set(3), _validation_set(2))
    with pytest.raises(ValueError, match="patience"):
        GuardSettings(patience=0)
    assert not ArtifactGuard(GuardSettings(every=0)).due(0)
