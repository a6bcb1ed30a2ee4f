#!/usr/bin/env bash
# What a GPU lease needs and cannot fetch there, made here in one command:
#
#     bash benchmarks/gpu_bundle.sh [CHECKPOINT]
#
# The lent machine (KINDS.md of the device tool) has PyTorch, Triton, timm, scikit-image and
# tifffile, reaches no package index, and a call carries at most 64 MiB. This writes the folder
# .dev/ (git-ignored through .git/info/exclude), which gpu_check.sh installs from when it is there:
#
#   .dev/whl/             the wheels the machine lacks (CPython 3.12, x86-64), at the versions
#                         installed here, so the GPU runs the library versions the tests ran with
#   .dev/imagecodecs/     imagecodecs unpacked with only the codecs the slides need (the wheel is
#                         26 MB, 79 MB unpacked; this is 8 MB)
#   .dev/tissue_fp16.pth  CHECKPOINT's model weights in float16 (half the size; the engine loads
#                         them into its float32 model)
#
# Then, with the device tool: run(command='STEPS="kernel_tests wsi_throughput" bash
# benchmarks/gpu_check.sh $OUT', carry=[".dev"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.dev
CHECKPOINT=${1:-}

grep -qsx '/.dev/' .git/info/exclude || echo '/.dev/' >>.git/info/exclude
rm -rf "$DEST/whl" "$DEST/imagecodecs"
mkdir -p "$DEST/whl"

# packages of setup.py (and their needs) that the machine's image does not hold, and py-spy
NAMES="albumentations albucore simsimd stringzilla pydantic pydantic-core annotated-types typing-inspection
mmengine addict yapf platformdirs termcolor openslide-python openslide-bin zarr numcodecs donfig
google-crc32c shapely orjson pydicom imagecodecs py-spy"
PLATFORMS=""
for tag in manylinux1 manylinux2014 manylinux_2_5 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
    manylinux_2_31 manylinux_2_34 manylinux_2_35; do
    PLATFORMS+=" --platform ${tag}_x86_64"
done
for name in $NAMES; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -d "$DEST/whl" "$name${version:+==$version}"
done

# imagecodecs: the package's Python files, the codecs of the generated and real slides (JPEG, zlib,
# deflate; LZW and PackBits are in _imcd) and the bundled libraries they link
unpacked=$(mktemp -d)
"$PY" -m zipfile -e "$DEST"/whl/imagecodecs-*.whl "$unpacked"
mkdir -p "$DEST/imagecodecs/imagecodecs" "$DEST/imagecodecs/imagecodecs.libs"
cp "$unpacked"/imagecodecs/*.py "$DEST/imagecodecs/imagecodecs/"
for module in _shared _shared_cython _imcd _jpeg8 _zlib _deflate; do
    for library in "$unpacked"/imagecodecs/"$module".*so; do
        [[ -e "$library" ]] || continue
        cp "$library" "$DEST/imagecodecs/imagecodecs/"
        for needed in $(readelf -d "$library" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
            [[ -e "$unpacked/imagecodecs.libs/$needed" ]] && cp "$unpacked/imagecodecs.libs/$needed" "$DEST/imagecodecs/imagecodecs.libs/"
        done
    done
done
cp -r "$unpacked"/imagecodecs-*.dist-info "$DEST/imagecodecs/"
rm -rf "$unpacked" "$DEST"/whl/imagecodecs-*.whl

if [[ -n "$CHECKPOINT" ]]; then
    "$PY" - "$CHECKPOINT" "$DEST/tissue_fp16.pth" <<'EOF'
import sys

import torch

from vismtl.engine.checkpoint import load_checkpoint, model_state_from

source, target = sys.argv[1:]
checkpoint = load_checkpoint(source)
state = {k: v.half() if v.is_floating_point() else v for k, v in model_state_from(checkpoint, source).items()}
torch.save({"model": state, "model_config": checkpoint.get("model_config")}, target)
EOF
fi
du -sh "$DEST"/* | sed 's/^/  /'
echo "carry .dev (at most 64 MiB with the working tree): $(du -sh "$DEST" | cut -f1)"
