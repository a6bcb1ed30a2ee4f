# PASCAL-Context single-task baseline for Delta_m: semseg alone, same backbone, decoder and schedule.
_base_ = ["./pascal_hps_vitl.py"]

tasks = dict(_delete_=True, semseg={{_base_.tasks.semseg}})
evaluation = dict(baselines=None)
