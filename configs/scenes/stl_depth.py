# Single-task baseline for Delta_m: the quickstart model and budget with only the depth task.
_base_ = ["../quickstart.py"]

tasks = dict(_delete_=True, depth={{_base_.tasks.depth}})
evaluation = dict(baselines=None)
