"""Settings of ``imgpref data scan``: one section per check (YAML via ``--config``, ``--set section.key=value``).

The defaults are the ones calibrated in ``bench/data_calibration.py`` (results in ``bench/data.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets_tools.duplicates import DuplicateConfig
from datasets_tools.jpeg_quality import JpegQualityConfig
from datasets_tools.motion import MotionConfig
from datasets_tools.outliers import OutlierConfig
from datasets_tools.padding import PaddingConfig
from datasets_tools.passband import PassbandConfig
from datasets_tools.resampling import UpscaleConfig
from datasets_tools.sharpness import BlurConfig


@dataclass
class ScanConfig:
    min_side: int = 512
    """Images whose short side (after removing padding) is below this are too small to train on."""
    thumbnail_size: int = 160
    """Longest side of the report's thumbnails, pixels."""
    workers: int = 1
    """Processes analysing images in parallel (each uses one core)."""
    padding: PaddingConfig = field(default_factory=PaddingConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    upscale: UpscaleConfig = field(default_factory=UpscaleConfig)
    passband: PassbandConfig = field(default_factory=PassbandConfig)
    jpeg: JpegQualityConfig = field(default_factory=JpegQualityConfig)
    duplicates: DuplicateConfig = field(default_factory=DuplicateConfig)
    outliers: OutlierConfig = field(default_factory=OutlierConfig)

    def __post_init__(self) -> None:
        if self.min_side < 1:
            raise ValueError(f"min_side must be a positive number of pixels, got {self.min_side}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.thumbnail_size < 16:
            raise ValueError(f"thumbnail_size must be at least 16 pixels, got {self.thumbnail_size}")
