# Hard parameter sharing on ViT-B/16: taps after blocks 3, 6, 9, 12, decoded at stride 4.
# Offline machines: model.backbone.pretrained_file=<timm weights of vit_base_patch16_384>.
model = dict(
    backbone=dict(name="vit_base_patch16_384", img_size=512, out_indices=(2, 5, 8, 11), pretrained=True),
    decoder=dict(type="hps", channels=256, num_convs=2, norm="bn", upsample=4),
)
