# A seconds-long histology model for the tests: Cerberus decoders on a tiny timm ResNet.
_base_ = ["../../configs/_base_/datasets/histology_tasks.py", "../../configs/_base_/schedules/adamw_poly.py"]

model = dict(
    backbone=dict(name="test_resnet"),
    decoder=dict(type="cerberus", max_width=16, out_channels=16, patch_hidden=32, center_cells=2),
    input_mean=(0.0, 0.0, 0.0),
    input_std=(1.0, 1.0, 1.0),
)
_transforms = [dict(type="RandomCrop", size=(64, 64)), dict(type="Pad", size=(64, 64))]
data = dict(
    train=dict(
        type="histology",
        sources=[
            dict(type="generated", length=32, size=(96, 96), seed=1, labels=("nuclei_inst", "nuclei_type")),
            dict(
                type="generated", length=32, size=(96, 96), seed=2, labels=("gland_inst", "lumen_inst", "tissue_class")
            ),
        ],
        mpp=0.5,
        transforms=_transforms,
    ),
    val=dict(type="histology", sources=[dict(type="generated", length=4, size=(96, 96), seed=3)], mpp=0.5),
    batch_size=4,
    val_batch_size=2,
    num_workers=0,
)
train = dict(max_iters=2, checkpoint_interval=2, log_interval=1, find_unused_parameters=True)
wsi = dict(mpp=0.5, tile=128, context=16, chunk=256, margin=32, batch_size=8, workers=0, thumbnail_size=512)
