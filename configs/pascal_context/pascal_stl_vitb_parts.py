# PASCAL-Context single-task baseline for Delta_m: parts alone, same backbone, decoder and schedule.
_base_ = ["./pascal_hps_vitb.py"]

tasks = dict(_delete_=True, parts={{_base_.tasks.parts}})
evaluation = dict(baselines=None)
