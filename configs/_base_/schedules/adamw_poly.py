# AdamW with linear warm-up and poly decay, per iteration.
optimizer = dict(type="adamw", lr=1e-3, weight_decay=1e-4)
schedule = dict(type="poly", power=0.9, warmup_iters=100, warmup_ratio=0.01)
train = dict(
    max_iters=2000,
    val_interval=0,
    checkpoint_interval=250,
    log_interval=20,
    grad_clip=10.0,
)
seed = 0
