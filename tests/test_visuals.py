"""What each run shows: best-epoch confusion matrix, fixed validation images with masks, config columns, W&B media."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import finished_run_info
from PIL import Image
from torchmetrics.classification import MulticlassJaccardIndex

from ablate.analyze import encoder_rf
from ablate.callbacks.convention import Misfit, predicted_classes
from ablate.callbacks.metrics import class_iou
from ablate.callbacks.predictions import overlay, palette, render_predictions
from ablate.config import load_config
from ablate.data import create_datamodule
from ablate.run.analysis import erf_radius, neck_summary
from ablate.run.fit import run
from ablate.run.loggers import neck_columns
from ablate.study.columns import config_column, swept_columns, swept_keys


def test_large_images_are_drawn_at_most_512_px_with_a_legend_of_the_classes_shown():
    images = np.zeros((2, 1024, 2048, 3), np.uint8)  # Cityscapes-sized
    true, pred = np.full((2, 1024, 2048), 255, np.uint8), np.zeros((2, 1024, 2048), np.uint8)
    true[:, :10, :10], pred[:, 500:] = 3, 7
    png = render_predictions(images, true, pred, [f"c{i}" for i in range(150)])  # ADE20K's 150 names
    assert png.size == (3 * 512 + 8, 2 * (256 + 4) + 14 * 3 + 4)  # legend rows: c0, c3, c7 only


def test_class_iou_matches_torchmetrics_and_leaves_absent_classes_out():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randint(0, 4, (2, 16, 16), generator=g), torch.randint(0, 4, (2, 16, 16), generator=g)
    target[0, :4], pred[pred == 3] = 255, 0  # some ignored pixels; class 3 never predicted
    target[target == 3] = 2  # ... and never true: absent from both
    expected = MulticlassJaccardIndex(5, average="none", ignore_index=255, zero_division=float("nan"))(pred, target)
    matrix = np.zeros((5, 5), np.int64)
    keep = target != 255
    np.add.at(matrix, (target[keep].numpy(), pred[keep].numpy()), 1)
    iou = class_iou(matrix)
    assert np.isnan(iou[3]) and np.isnan(iou[4])
    np.testing.assert_allclose(iou[:3], expected[:3].numpy(), rtol=1e-6)


def test_palette_is_distinct_and_overlay_leaves_ignored_pixels_alone():
    colours = palette(21)
    assert len({tuple(c) for c in colours}) == 21 and tuple(colours[0]) == (0, 0, 0)
    image = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[1, 255], [0, 255]], np.uint8)
    out = overlay(image, mask, colours)
    assert (out[:, 1] == 200).all() and (out[0, 0] != 200).any() and (out[1, 0] == 100).all()


def test_config_columns_are_scalars_with_the_neck_defaults_filled_in():
    aspp = neck_columns({"name": "aspp", "rates": [2, 4, 6], "norm": "none"})
    assert {k: aspp[k] for k in ("name", "rates", "norm", "fusion", "image_pooling")} == {
        "name": "aspp",
        "rates": "2,4,6",
        "norm": "none",
        "fusion": "concat",
        "image_pooling": True,
    }
    assert neck_columns({"name": "ppm"})["bins"] == "1,2,3,6"
    assert all(not isinstance(v, (list, tuple, dict)) for v in aspp.values())
    keys = swept_keys({"row": {"choices": ["a", "b"]}}, {"a": {"model.neck.norm": "none"}, "b": {"optim.lr": 0.01}})
    assert keys == ["model.neck.norm", "optim.lr"]
    assert [config_column(k) for k in [*keys, "model.neck"]] == ["neck.norm", "swept.optim/lr", "neck.name"]
    assert swept_columns({"model.neck.norm": "none", "optim.lr": 0.01}, keys) == {"optim/lr": 0.01}


def test_predictions_come_from_logits_resized_to_the_mask_or_from_class_ids():
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    logits = torch.zeros(2, 3, 4, 4)
    logits[:, 2] = 1
    preds, n = predicted_classes(logits, mask)  # smaller logits are resized to the mask
    assert preds.shape == (2, 8, 8) and (preds == 2).all() and n == 3
    assert predicted_classes(preds, mask) == (preds, None)  # class ids, as ablate's validation_step returns
    for wrong, says in ((torch.zeros(2, 3, 16, 16), "larger than the masks"), ({"out": logits}, "mapping")):
        with pytest.raises(Misfit, match=says):
            predicted_classes(wrong, mask)


def _tiny_run(tiny, output, extra=(), wandb=False):
    overrides = [t for t in tiny if not (wandb and t.startswith("wandb"))] + ["trainer.max_epochs=2", *extra]
    cfg = load_config(None, overrides + (["wandb.mode=offline"] if wandb else []))
    return cfg, run(cfg, output)


def test_run_writes_the_best_epochs_confusion_matrix_and_fixed_predictions(tiny):
    cfg, summary = _tiny_run(tiny, "a")
    dm = create_datamodule(cfg)
    confusion = json.loads(Path("a/confusion.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert confusion["classes"] == list(dm.classes) and matrix.shape == (7, 7) and 0 <= confusion["epoch"] < 2
    masks = dm.val_set.masks
    assert matrix.sum() == int((masks != 255).sum())  # every labelled validation pixel, once
    iou = class_iou(matrix)
    assert np.nanmean(iou) == pytest.approx(summary["val/mIoU_best"], abs=1e-6)  # the matrix of the best epoch
    assert {k: summary[k] for k in summary if k.startswith("val/IoU_best/")} == pytest.approx(
        {f"val/IoU_best/{c}": v for c, v in zip(dm.classes, iou) if not np.isnan(v)}
    )
    assert summary["latency_ms"] > 0
    saved = json.loads(Path("a/summary.json").read_text())
    assert saved["latency_ms"] == summary["latency_ms"] and "val/IoU_best/background" in saved

    shown = np.load("a/predictions.npz")
    assert shown["images"].shape == (4, 32, 32, 3) and shown["images"].dtype == np.uint8
    np.testing.assert_array_equal(shown["true"], masks[:4].numpy())  # the first validation images, in order
    assert shown["pred"].shape == (4, 32, 32) and shown["pred"].max() < 7 and list(shown["classes"]) == list(dm.classes)
    png = Image.open("a/predictions.png")
    assert png.size[0] == 3 * 128 + 8 and png.size[1] > 4 * 128  # image | true | predicted, 4 rows, legend
    erf = np.asarray(Image.open("a/erf.png"))  # the final model's ERF on the first val images, peak 255
    assert erf.shape == (32, 32) and erf.max() == 255 and summary["erf/r50_px"] <= summary["erf/r90_px"]
    assert erf[16, 16] > 0 and summary["erf/r90_px"] == pytest.approx(erf_radius(erf / 255.0, 0.9), abs=1.5)

    _, other = _tiny_run(tiny, "b", ["seed=1", "model.neck.fusion=sum", "trainer.max_epochs=1"])
    again = np.load("b/predictions.npz")  # another variant and seed: the same images and true masks
    np.testing.assert_array_equal(again["images"], shown["images"])
    np.testing.assert_array_equal(again["true"], shown["true"])


def test_wandb_run_shows_curves_media_confusion_and_config_columns(tiny):
    cfg, _ = _tiny_run(tiny, "w", wandb=True)
    (run_dir,) = Path("runs/wandb").glob("offline-run-*")
    info = finished_run_info(run_dir)
    assert info["config"]["neck"] == neck_columns({"name": "aspp", "out_channels": 16, "rates": [1, 2, 3]})
    assert info["config"]["neck"]["rates"] == "1,2,3" and info["config"]["neck"]["image_pooling"] is True
    assert "val/erf/_type" in {k for h in info["history"] for k in h}
    for key in ("latency_ms", "params/neck", "params/total", "gflops", "val/IoU_best/background", "erf/r90_px"):
        assert key in info["summary"], key
    model, enc_rf, stride, size = encoder_rf(cfg)
    rf = neck_summary(model.neck, enc_rf, stride, size)  # the receptive fields of part A's analysis, per branch
    assert {"rf/rate3", "gridding_holes"} <= set(rf) and {k: info["summary"][k] for k in rf} == pytest.approx(rf)
    curves = [h for h in info["history"] if "val/IoU/background" in h]
    assert len(curves) == 2 and all("val/mIoU" in h for h in curves)  # one point per epoch
    (media,) = [h for h in info["history"] if "val/predictions/_type" in h]  # nested values come flattened
    assert media["val/predictions/_type"] == "images/separated" and media["val/predictions/count"] == 4
    assert [set(m) for m in media["val/predictions/all_masks"]] == [{"predictions", "ground_truth"}] * 4
    (chart,) = [h for h in info["history"] if "val/confusion_matrix_table/_type" in h]  # logged by SegmentationMetrics
    assert chart["val/confusion_matrix_table/_type"] == "table-file"
    (table_file,) = run_dir.glob("files/media/table/val/confusion_matrix_table_*.table.json")
    table = json.loads(table_file.read_text())
    matrix = np.array(json.loads(Path("w/confusion.json").read_text())["matrix"])
    assert table["columns"] == ["Actual", "Predicted", "nPredictions"] and len(table["data"]) == 49
    assert sum(row[2] for row in table["data"]) == matrix.sum()
