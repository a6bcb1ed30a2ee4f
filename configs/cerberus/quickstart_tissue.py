# Cerberus on generated H&E tiles, trained from scratch on a CPU in minutes, from four
# partially labelled sources mixed in every batch: one labels nuclei with types, one glands
# (with types and lumina), one only tissue classes, one only nuclei. The validation tiles
# are fully labelled. `python tools/train.py configs/cerberus/quickstart_tissue.py`.
_base_ = ["../_base_/datasets/histology_tasks.py", "../_base_/schedules/adamw_poly.py"]

model = dict(
    backbone=dict(name="resnet18", pretrained=False),
    decoder=dict(type="cerberus", max_width=32, out_channels=32, patch_hidden=128, center_cells=3, norm="bn"),
    input_mean=(0.0, 0.0, 0.0),
    input_std=(1.0, 1.0, 1.0),
)

_transforms = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    dict(type="HueSaturationValue", hue_shift_limit=4, sat_shift_limit=10, val_shift_limit=8, p=0.5),
]
# Training tiles are rendered at the training size rather than cropped from larger ones: the
# renderer puts surface epithelium along a tile edge, which crops would mostly cut away.
_tile = (160, 160)
data = dict(
    train=dict(
        type="histology",
        sources=[
            dict(type="generated", length=10_000, size=_tile, seed=10, labels=("nuclei_inst", "nuclei_type")),
            dict(
                type="generated", length=10_000, size=_tile, seed=11, labels=("gland_inst", "gland_type", "lumen_inst")
            ),
            dict(type="generated", length=10_000, size=_tile, seed=12, labels=("tissue_class",)),
            dict(type="generated", length=10_000, size=_tile, seed=13, labels=("nuclei_inst",)),
        ],
        weights=(1.0, 1.0, 1.0, 1.0),
        mpp=0.5,
        transforms=_transforms,
    ),
    val=dict(type="histology", sources=[dict(type="generated", length=54, size=(256, 256), seed=99)], mpp=0.5),
    batch_size=8,
    val_batch_size=6,
    num_workers=2,
)
optimizer = dict(lr=2e-3)
train = dict(max_iters=600, checkpoint_interval=200, find_unused_parameters=True)
evaluation = dict(show_max=12)
