# Cerberus in the paper's setting (Graham et al. 2023): ResNet-34 (stride-1 first conv),
# 448x448 tiles at 0.5 um/px, Adam 1e-3 decayed x0.1 every 75k iterations, batch 12,
# from partially labelled sources mixed in every batch. Stage 1 trains every task but the
# nuclear types (their decoder runs without gradients while no source labels them); stage 2
# is configs/cerberus/cerberus_resnet34_typing.py. Point the sources at your data
# (data/README.md, "Histology sources").
_base_ = ["../_base_/datasets/histology_tasks.py", "../_base_/models/cerberus_resnet34.py"]

_transforms = [
    dict(type="RandomScale", scale_limit=(-0.1, 0.1), p=0.5),
    dict(type="RandomCrop", size=(448, 448)),
    dict(type="Pad", size=(448, 448)),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    dict(type="HueSaturationValue", hue_shift_limit=4, sat_shift_limit=15, val_shift_limit=10, p=0.5),
    dict(type="GaussianBlur", blur_limit=(3, 3), p=0.1),
]
data = dict(
    train=dict(
        type="histology",
        sources=[
            dict(type="folder", root="data/histology/nuclei", structure="nuclei", mpp=0.25),
            dict(type="folder", root="data/histology/glands", structure="gland", mpp=0.5),
            dict(type="folder", root="data/histology/lumina", structure="lumen", mpp=0.5),
            dict(type="patches", root="data/histology/tissue", classes={{_base_.tasks.tissue.class_names}}, mpp=0.5),
        ],
        weights=(1.0, 1.0, 0.5, 1.0),
        mpp=0.5,
        transforms=_transforms,
    ),
    val=dict(
        type="histology",
        sources=[dict(type="folder", root="data/histology/val_nuclei", structure="nuclei", mpp=0.25)],
        mpp=0.5,
    ),
    batch_size=12,
    val_batch_size=4,
    num_workers=8,
)
optimizer = dict(type="adam", lr=1e-3, weight_decay=0.0, no_decay_norm_and_bias=False)
schedule = dict(type="step", step_iters=75_000, gamma=0.1, warmup_iters=0)
train = dict(
    max_iters=150_000,
    val_interval=5_000,
    checkpoint_interval=5_000,
    log_interval=50,
    find_unused_parameters=True,
)
seed = 0
