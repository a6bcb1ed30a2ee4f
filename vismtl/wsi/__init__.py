"""Whole-slide inference: slide reading, tissue masks, tiling, batched inference, stitching, writers, resume."""

from vismtl.wsi.batch import infer_slides
from vismtl.wsi.engine import SlideRunner
from vismtl.wsi.inputs import expand_inputs
from vismtl.wsi.reader import Slide, SlideError
from vismtl.wsi.settings import WSISettings

__all__ = ["Slide", "SlideError", "SlideRunner", "WSISettings", "expand_inputs", "infer_slides"]
