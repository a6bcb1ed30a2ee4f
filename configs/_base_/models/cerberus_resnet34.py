# Cerberus (Graham et al. 2023): ResNet-34 with a stride-1 first conv (features at strides
# 1, 2, 4, 8, 16), one U-Net decoder per dense task, the patch classifier on the central
# 9x9 cells of the stride-16 feature. Input is RGB / 255 only (no mean/std normalisation).
model = dict(
    backbone=dict(name="resnet34", first_conv_stride=1, pretrained=False),
    decoder=dict(type="cerberus", bottleneck=256, out_channels=96, patch_hidden=256, center_cells=9, norm="bn"),
    input_mean=(0.0, 0.0, 0.0),
    input_std=(1.0, 1.0, 1.0),
)
