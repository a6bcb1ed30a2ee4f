# TaskExpert (memorial mixture-of-experts) on ViT-L/16: experts and gates at the four taps
# (after blocks 6, 12, 18, 24), memory decoded at stride 4.
# Offline machines: model.backbone.pretrained_file=<timm weights of vit_large_patch16_384>.
model = dict(
    backbone=dict(name="vit_large_patch16_384", img_size=512, out_indices=(5, 11, 17, 23), pretrained=True),
    decoder=dict(type="taskexpert", num_experts=8, channels=256, memory_update="add", head_upsample=4, norm="bn"),
)
