"""Family names and the adapter each loads, as plain data: configs check ``model.family`` against it
without importing torch or diffusers."""

#: Family name → "module:class" of its adapter.
FAMILIES: dict[str, str] = {
    "flux": "imgpref.models.flux:FluxAdapter",
    "flux-kontext": "imgpref.models.flux_kontext:FluxKontextAdapter",
    "qwen-image": "imgpref.models.qwen_image:QwenImageAdapter",
    "qwen-image-edit": "imgpref.models.qwen_image_edit:QwenImageEditAdapter",
    "sd": "imgpref.models.sd:SDAdapter",
    "sd3": "imgpref.models.sd3:SD3Adapter",
}

#: The value of ``model.path`` that selects a family's tiny random-init pipeline.
TINY = "tiny"

#: Families whose adapter conditions on a reference image as well as the prompt (``takes_reference_image``).
REFERENCE_FAMILIES: frozenset[str] = frozenset({"flux-kontext", "qwen-image-edit"})
