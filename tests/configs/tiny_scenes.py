# A seconds-long run for the tests: every task, a tiny timm ResNet, 64x64 scenes.
_base_ = ["../../configs/_base_/datasets/scenes.py", "../../configs/_base_/schedules/adamw_poly.py"]

model = dict(
    backbone=dict(name="test_resnet", out_indices=(1, 2, 3, 4)),
    decoder=dict(type="hps", channels=16, num_convs=1),
)
_transforms = [dict(type="HorizontalFlip", p=0.5), dict(type="ColorJitter", p=0.5)]
data = dict(
    train=dict(type="scenes", length=64, size=(64, 64), seed=0, transforms=_transforms),
    val=dict(type="scenes", length=8, size=(64, 64), seed=1),
    batch_size=4,
    val_batch_size=4,
    num_workers=0,
)
schedule = dict(warmup_iters=2)
train = dict(max_iters=6, checkpoint_interval=2, log_interval=2, val_interval=0)
