# TaskExpert (memorial mixture-of-experts) on ViT-B/16: taps after blocks 3, 6, 9, 12.
# Offline machines: model.backbone.pretrained_file=<timm weights of vit_base_patch16_384>.
model = dict(
    backbone=dict(name="vit_base_patch16_384", img_size=512, out_indices=(2, 5, 8, 11), pretrained=True),
    decoder=dict(type="taskexpert", num_experts=8, channels=256, memory_update="add", head_upsample=4, norm="bn"),
)
