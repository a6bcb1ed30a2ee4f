# Hard parameter sharing on ViT-L/16: taps after blocks 6, 12, 18, 24, decoded at stride 4.
# Offline machines: model.backbone.pretrained_file=<timm weights of vit_large_patch16_384>.
model = dict(
    backbone=dict(name="vit_large_patch16_384", img_size=512, out_indices=(5, 11, 17, 23), pretrained=True),
    decoder=dict(type="hps", channels=256, num_convs=2, norm="bn", upsample=4),
)
