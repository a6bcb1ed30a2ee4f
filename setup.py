"""vismtl: multi-task dense prediction for scenes and histology."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "vismtl" / "version.py").read_text(), VERSION)

setup(
    name="vismtl",
    version=VERSION["__version__"],
    description="Multi-task dense prediction in vision: one timm backbone, many task decoders.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["vismtl", "vismtl.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=1.0.9",
        "albumentations>=2.0",
        "opencv-python-headless>=4.8",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-image>=0.21",
        "tqdm>=4.64",
        "mmengine>=0.10",
        # TensorBoard event files for the training log (torch.utils.tensorboard needs it).
        "tensorboard>=2.14",
        # Whole-slide and histology stack (used by vismtl.wsi and the histology datasets).
        "openslide-python>=1.3",
        "openslide-bin>=4.0",
        "zarr>=3.0",
        "tifffile>=2023.7",
        # JPEG (and other) codecs for tifffile: writing tiled pyramidal TIFFs (synthetic slides).
        "imagecodecs>=2023.1",
        "shapely>=2.0",
        # GeoJSON text of every object of a slide (numpy vertices written directly): 1.13x cheaper
        # chunk finishing than the standard library's encoder (docs/benchmarks.md).
        "orjson>=3.9",
        # Series UIDs of a folder's DICOM files from their headers: OpenSlide scans the whole folder
        # at each open, 30x slower for 200 slides and growing with the square (docs/benchmarks.md).
        "pydicom>=2.4",
    ],
    extras_require={
        "test": ["pytest>=7.4", "ruff>=0.5"],
        # mmsegmentation 1.2.2 only installs beside mmcv-lite (REFERENCE.md section 6);
        # it is used to cross-check metrics, never at run time.
        "mmseg": ["mmsegmentation==1.2.2", "mmcv-lite==2.1.0", "ftfy", "regex"],
    },
)
