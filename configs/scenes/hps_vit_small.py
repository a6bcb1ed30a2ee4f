# The quickstart tasks and data with a ViT-S/16 backbone: four taps at equal depth (after
# blocks 3, 6, 9, 12), all at stride 16; the position embedding is built for 128x128.
_base_ = ["../quickstart.py"]

model = dict(backbone=dict(_delete_=True, name="vit_small_patch16_224", img_size=128, out_indices=(2, 5, 8, 11)))
optimizer = dict(lr=5e-4, weight_decay=0.05)
