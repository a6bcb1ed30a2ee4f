# NYUD-v2 multi-task (REFERENCE section 1): 795 train / 654 val frames, four tasks.
tasks = dict(
    semseg=dict(kind="semseg", num_classes=40, loss_weight=1.0),
    depth=dict(kind="depth", loss_weight=1.0),
    normals=dict(kind="normals", loss_weight=10.0),
    edge=dict(kind="edge", loss_weight=50.0, pos_weight=0.95, max_dist=0.011),
)

_root = "data/NYUDv2"
_train_transforms = [
    dict(type="RandomScale", scale_limit=(-0.5, 1.0), p=1.0),
    dict(type="RandomCrop", size=(448, 576), cat_max_ratio=0.75),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="RandomBrightnessContrast", brightness_limit=0.125, contrast_limit=0.5, p=0.5),
    dict(type="HueSaturationValue", hue_shift_limit=9, sat_shift_limit=25, val_shift_limit=0, p=0.5),
    dict(type="Pad", size=(448, 576)),
]

data = dict(
    train=dict(type="nyud", root=_root, split="train", transforms=_train_transforms),
    val=dict(type="nyud", root=_root, split="val"),
    batch_size=2,
    val_batch_size=1,
    num_workers=4,
)
