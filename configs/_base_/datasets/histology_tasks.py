# Cerberus' tasks (REFERENCE section 4): nuclei, gland and lumen instances, gland and nuclear
# types, and the tissue class of the tile's centre, with the paper's loss weights.
tasks = dict(
    nuclei=dict(kind="instance", band=3, postprocess="watershed", threshold=0.5, min_size=10, loss_weight=1.0),
    gland=dict(
        kind="instance", band=11, postprocess="interior_minus_contour", threshold=0.55, min_size=30, loss_weight=1.4
    ),
    lumen=dict(
        kind="instance",
        band=3,
        postprocess="interior_minus_contour",
        threshold=0.5,
        min_size=10,
        inside="gland",
        loss_weight=1.5,
    ),
    gland_type=dict(
        kind="type", num_classes=3, class_names=("background", "gland", "surface epithelium"), instances_from="gland"
    ),
    nuclei_type=dict(
        kind="type",
        num_classes=7,
        class_names=("background", "neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"),
        class_weights=(1.0, 12.0, 1.0, 2.0, 6.0, 12.0, 2.0),
        instances_from="nuclei",
    ),
    tissue=dict(
        kind="patch_class",
        num_classes=9,
        class_names=(
            "background",
            "abnormal epithelium",
            "normal epithelium",
            "inflammatory",
            "muscle",
            "stroma",
            "debris",
            "mucous",
            "adipose",
        ),
        loss_weight=0.4,
    ),
)
