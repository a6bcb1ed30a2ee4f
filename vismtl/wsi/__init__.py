"""Whole-slide inference: slide reading, tissue masks, tiling, batched inference, stitching, writers, resume.

The names below are imported on first use (PEP 562): a chunk-finishing process imports
``vismtl.wsi.finishing``, which runs this file, and must not pay for the model builders and
their libraries (timm, torchvision: seconds per process) that ``infer_slides`` needs.
"""

from importlib import import_module

_HOMES = {
    "infer_slides": "vismtl.wsi.batch",
    "survey_slides": "vismtl.wsi.batch",
    "SlideRunner": "vismtl.wsi.engine",
    "expand_inputs": "vismtl.wsi.inputs",
    "Slide": "vismtl.wsi.reader",
    "SlideError": "vismtl.wsi.reader",
    "WSISettings": "vismtl.wsi.settings",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'vismtl.wsi' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
