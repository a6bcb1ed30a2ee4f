# Generated 3-D scenes (vismtl.data.scenes): no download, every task labelled.
tasks = dict(
    semseg=dict(
        kind="semseg",
        num_classes=7,
        class_names=("wall", "floor", "sphere", "box", "cylinder", "cone", "figure"),
        loss_weight=1.0,
    ),
    parts=dict(kind="parts", num_classes=4, class_names=("background", "head", "torso", "legs"), loss_weight=2.0),
    saliency=dict(kind="saliency", loss_weight=5.0),
    normals=dict(kind="normals", loss_weight=10.0),
    depth=dict(kind="depth", loss_weight=1.0),
    edge=dict(kind="edge", loss_weight=50.0, pos_weight=0.95, max_dist=0.011),
)

_train_transforms = [
    dict(type="RandomScale", scale_limit=(-0.2, 0.25), p=1.0),
    dict(type="RandomCrop", size=(128, 128)),
    dict(type="Pad", size=(128, 128)),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="ColorJitter", brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.8),
]

data = dict(
    train=dict(type="scenes", length=100_000, size=(128, 128), seed=0, transforms=_train_transforms),
    val=dict(type="scenes", length=256, size=(128, 128), seed=1),
    batch_size=8,
    val_batch_size=16,
    num_workers=2,
)
