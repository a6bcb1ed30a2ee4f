# Hard parameter sharing: a ResNet-18 from timm, one light decoder per task.
model = dict(
    backbone=dict(name="resnet18", out_indices=(1, 2, 3, 4), pretrained=False),
    decoder=dict(type="hps", channels=64, num_convs=1, norm="bn"),
)
