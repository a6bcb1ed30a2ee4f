# Single-task baseline for Delta_m: the quickstart model and budget with only the edge task.
_base_ = ["../quickstart.py"]

tasks = dict(_delete_=True, edge={{_base_.tasks.edge}})
evaluation = dict(baselines=None)
