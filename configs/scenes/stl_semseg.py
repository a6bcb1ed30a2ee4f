# Single-task baseline for Delta_m: the quickstart model and budget with only the semseg task.
_base_ = ["../quickstart.py"]

tasks = dict(_delete_=True, semseg={{_base_.tasks.semseg}})
evaluation = dict(baselines=None)
