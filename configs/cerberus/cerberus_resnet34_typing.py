# Cerberus stage 2: the nuclear-type decoder alone, on a source with nuclear types, from the
# stage-1 weights; everything else frozen with its BatchNorm statistics fixed.
_base_ = ["./cerberus_resnet34.py"]

data = dict(
    train=dict(
        sources=[dict(type="folder", root="data/histology/nuclei_typed", structure="nuclei", mpp=0.25)],
        weights=None,
    )
)
train = dict(
    max_iters=50_000,
    load_from="work_dirs/cerberus_resnet34/checkpoints/latest.pth",
    trainable=("decoder.decoders.nuclei_type", "heads.nuclei_type"),
    frozen_norm=True,
)
