# The quickstart model and budget with the TaskExpert decoder instead of hard parameter
# sharing: 8 experts of width 64 at each of the four ResNet-18 taps, on a stride-8 grid.
_base_ = ["../quickstart.py"]

model = dict(
    decoder=dict(
        _delete_=True, type="taskexpert", num_experts=8, channels=64, grid_stride=8, head_upsample=2, norm="bn"
    )
)
