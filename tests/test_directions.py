"""Each metric's direction and unit from its name (and values): what a table orders by and shows Δ in."""

import math

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution

from ablate.callbacks.convention import split_batch
from ablate.stats.directions import delta_unit, infer_direction, is_fraction, metric_direction
from ablate.study.variants import study_rows


@pytest.mark.parametrize(
    "metric, direction, fraction",
    [
        ("val/mIoU", "maximize", True),
        ("val_MulticlassAccuracy", "maximize", True),
        ("val_MulticlassJaccardIndex", "maximize", True),
        ("val/IoU/car", "maximize", True),
        ("val/pixel_acc", "maximize", True),
        ("val_MulticlassF1Score", "maximize", True),
        ("val/dice", "maximize", True),
        ("val_loss", "minimize", False),
        ("train/loss", "minimize", False),
        ("val_MeanSquaredError", "minimize", False),
        ("val/rmse", "minimize", False),
        ("val/seg/NLL", "minimize", False),
        ("val/cal/ECE", "minimize", False),
        ("val/seg/Brier", "minimize", False),
        ("val/sc/AURC", "minimize", False),
        ("latency_ms", "minimize", False),
        ("time/fit_s", "minimize", False),
        ("val_perplexity", "minimize", False),
        ("gflops", "maximize", False),
        ("lr-SGD", "maximize", False),
    ],
)
def test_a_metric_name_says_its_direction_and_whether_it_is_a_fraction(metric, direction, fraction):
    assert infer_direction(metric) == direction and is_fraction(metric) == fraction
    assert metric_direction(metric) == (direction, "inferred from its name")
    assert metric_direction(metric, "maximize") == ("maximize", "given")  # an explicit direction always wins
    assert delta_unit(metric) == ("points" if fraction else metric)


def test_a_fraction_by_name_whose_values_leave_0_1_is_shown_in_its_own_units():
    assert delta_unit("mIoU%", [15.2, 14.8]) == "mIoU%" and delta_unit("mIoU%", [0.15, 0.148]) == "points"
    assert is_fraction("val/mIoU", [0.5, math.nan])  # a value that is not finite says nothing


def test_a_seed_whose_metric_is_not_finite_is_left_out_of_its_row_and_the_status_says_so():
    distribution = {"model.neck.fusion": CategoricalDistribution(["concat", "sum"])}
    trials = [
        optuna.trial.create_trial(
            value=0.5,
            params={"model.neck.fusion": fusion},
            distributions=distribution,
            user_attrs={
                "variant": f"model.neck.fusion={fusion}",
                "seeds": [0, 1, 2],
                "values": [0.5, 0.5, 0.5],
                "seed_metrics": [{"val/risk": v} for v in values],
            },
        )
        for fusion, values in (("concat", [0.1, math.nan, 0.3]), ("sum", [math.nan, math.nan, math.inf]))
    ]
    rows = {r["variant"]: r for r in study_rows(trials, "val/risk")}
    concat, total = rows["model.neck.fusion=concat"], rows["model.neck.fusion=sum"]
    assert concat["n"] == 2 and concat["mean"] == pytest.approx(0.2) and concat["seeds"] == {"0": 0.1, "2": 0.3}
    assert concat["status"] == "complete, 1 seed(s) not finite"
    assert total["n"] == 0 and total["mean"] is None and total["status"] == "complete, 3 seed(s) not finite"


def test_a_mask_with_a_channel_of_one_is_read_as_the_mask():
    image, mask = torch.zeros(2, 3, 8, 8), torch.ones(2, 1, 8, 8, dtype=torch.long)  # torchvision v2 Mask batches
    got_image, got_mask = split_batch((image, mask))
    assert got_image is image and got_mask.shape == (2, 8, 8)
