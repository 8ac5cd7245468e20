"""Artifact detectors for over-trained preference LoRAs: grid/checkerboard textures, darkening,
desaturation and loss of diversity across seeds; a folder scanner; a training guard.

- `grid`, `tone`, `diversity`: the pure math (numpy/scipy/PIL only, no training code);
- `defaults`: the calibrated thresholds (`ArtifactThresholds`, bench/artifacts.md) and `GuardSettings`,
  importable without numpy or scipy;
- `measure`: every detector on one image, alone or against its base image, and the flags;
- `scan`, `report`, `cli`: ``imgpref artifacts scan DIR [--reference DIR] --out OUT``;
- `guard`: `ArtifactGuard` for the training recipes;
- `inject`, `synthetic`: artifacts of controlled strength and clean images, for calibration and tests.
"""
