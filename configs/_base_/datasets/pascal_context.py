# PASCAL-Context multi-task (REFERENCE section 1): 4998 train / 5105 val images, five tasks.
# Prepare once: python tools/prepare_pascal_context.py data/PASCAL_MT (see data/README.md).
tasks = dict(
    semseg=dict(kind="semseg", num_classes=21, loss_weight=1.0),
    parts=dict(kind="parts", num_classes=7, loss_weight=2.0),
    saliency=dict(kind="saliency", loss_weight=5.0),
    normals=dict(kind="normals", loss_weight=10.0),
    edge=dict(kind="edge", loss_weight=50.0, pos_weight=0.95, max_dist=0.0075),
)

_root = "data/PASCAL_MT"
# The ATRC / InvPT recipe: scale 0.5-2, 512x512 crops where no class covers over 75 %,
# flips, photometric distortion, padding to 512x512; ImageNet normalisation is in the model.
_train_transforms = [
    dict(type="RandomScale", scale_limit=(-0.5, 1.0), p=1.0),
    dict(type="RandomCrop", size=(512, 512), cat_max_ratio=0.75),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="RandomBrightnessContrast", brightness_limit=0.125, contrast_limit=0.5, p=0.5),
    dict(type="HueSaturationValue", hue_shift_limit=9, sat_shift_limit=25, val_shift_limit=0, p=0.5),
    dict(type="Pad", size=(512, 512)),
]

data = dict(
    train=dict(type="pascal_context", root=_root, split="train", transforms=_train_transforms),
    # Evaluation at the original resolution (no resizing), one image per batch; edges are
    # scored on the 2498 'test_new' ids only.
    val=dict(type="pascal_context", root=_root, split="val", edge_ids="data/pascal_context_meta/test_new.txt"),
    batch_size=2,
    val_batch_size=1,
    num_workers=4,
)
