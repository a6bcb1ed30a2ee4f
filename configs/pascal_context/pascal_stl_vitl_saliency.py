# PASCAL-Context single-task baseline for Delta_m: saliency alone, same backbone, decoder and schedule.
_base_ = ["./pascal_hps_vitl.py"]

tasks = dict(_delete_=True, saliency={{_base_.tasks.saliency}})
evaluation = dict(baselines=None)
