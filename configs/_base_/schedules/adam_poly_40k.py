# The recipe of the InvPT / TaskPrompter / TaskExpert family: Adam 2e-5, weight decay 1e-6,
# poly(0.9) per iteration, 40k iterations, batch 2 per GPU with SyncBN, gradient clip 10, fp32.
optimizer = dict(type="adam", lr=2e-5, weight_decay=1e-6, no_decay_norm_and_bias=False)
schedule = dict(type="poly", power=0.9, warmup_iters=0)
train = dict(
    max_iters=40_000,
    val_interval=4_000,
    checkpoint_interval=2_000,
    log_interval=50,
    grad_clip=10.0,
    sync_bn=True,
)
seed = 0
