# The quickstart tasks and data with a ConvNeXt-T backbone (4 levels, strides 4..32).
_base_ = ["../quickstart.py"]

model = dict(backbone=dict(name="convnext_tiny", out_indices=(0, 1, 2, 3)))
optimizer = dict(lr=5e-4, weight_decay=0.05)
