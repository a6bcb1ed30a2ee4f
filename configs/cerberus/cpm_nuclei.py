# Nuclei instances on the real MICCAI 2015 CPM tiles (../shared/data/nuclei_cpm), trained on
# 11 tiles and evaluated on 4 held out (image03 and image06 at 20x, image10 and image14 at
# 40x); 40x tiles are resampled to 0.5 um/px. Fits in 20 minutes on 2 CPU cores.
# In that copy the masks of image04 and image05 are swapped (their sizes are each other's;
# an overlay confirms it): the source pairs them right.
_base_ = ["../_base_/schedules/adamw_poly.py"]

tasks = dict(nuclei=dict(kind="instance", band=3, postprocess="watershed", threshold=0.5, min_size=10))
model = dict(
    backbone=dict(name="resnet18", pretrained=False),
    decoder=dict(type="cerberus", max_width=32, out_channels=32, norm="bn"),
    input_mean=(0.0, 0.0, 0.0),
    input_std=(1.0, 1.0, 1.0),
)
_root = "../shared/data/nuclei_cpm"
_held_out = ("image03", "image06", "image10", "image14")
_swapped = {"image04": "image05_mask.txt", "image05": "image04_mask.txt"}
_train = tuple(f"image{i:02d}" for i in range(1, 16) if f"image{i:02d}" not in _held_out)
_transforms = [
    dict(type="RandomScale", scale_limit=(-0.1, 0.1), p=0.5),
    dict(type="RandomCrop", size=(192, 192)),
    dict(type="Pad", size=(192, 192)),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    dict(type="HueSaturationValue", hue_shift_limit=6, sat_shift_limit=20, val_shift_limit=15, p=0.7),
]
data = dict(
    train=dict(
        type="histology",
        sources=[dict(type="cpm", root=_root, names=_train, mask_files=_swapped)],
        mpp=0.5,
        transforms=_transforms,
    ),
    val=dict(type="histology", sources=[dict(type="cpm", root=_root, names=_held_out, mask_files=_swapped)], mpp=0.5),
    batch_size=8,
    val_batch_size=1,
    num_workers=2,
)
optimizer = dict(lr=2e-3)
train = dict(max_iters=700, checkpoint_interval=350, log_interval=20)
