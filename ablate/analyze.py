"""`python -m ablate.analyze [CONFIG] [key=value ...]`: the neck's receptive fields, per branch, with DeepLabv3's
valid-tap shares (Chen et al. 2017, Fig. 4) and HDC gridding holes (Wang et al. 2018); with --checkpoint or
--out, the effective receptive field (Luo et al. 2016) over validation images, as numbers and a PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from rich import box
from rich.table import Table
from rich.text import Text

from ablate import cli, config
from ablate.config import RunConfig, flatten, load_config, to_dict
from ablate.errors import ConfigError
from ablate.run import analysis

console = cli.make_console(stderr=False)
ARCHITECTURE = ("encoder", "encoder_depth", "output_stride", "neck", "head", "classes")  # what the weights depend on


def random_model(cfg: RunConfig):
    """The config's SegmentationModel at random init (nothing downloaded), to walk its layers."""
    from ablate.run.model import SegmentationModel

    m = cfg.model
    return SegmentationModel(
        encoder=m.encoder,
        classes=1,
        neck=m.neck,
        encoder_depth=m.encoder_depth,
        output_stride=m.output_stride,
        head=m.head,
    )


def encoder_rf(cfg: RunConfig) -> tuple[object, int, int, tuple[int, int]]:
    """(random-init model, receptive field in input pixels and stride of the neck's input, (H, W) of that input at
    the config's image size): the numbers ablate.callbacks.NeckAnalysis reads from a running model."""
    model = random_model(cfg)
    rf, stride = analysis.input_receptive_field(model, model.neck)
    return model, rf, stride, analysis.feature_size(cfg.data.image_size, stride)


def rf_report(cfg: RunConfig) -> dict:
    """The theoretical part of the report: encoder and branch receptive fields, tap shares, gridding holes."""
    model, enc_rf, stride, size = encoder_rf(cfg)
    report = {
        "encoder": cfg.model.encoder,
        "encoder_depth": cfg.model.encoder_depth,
        "stride": stride,
        "image_size": cfg.data.image_size,
        "feature_size": list(size),
        "encoder_rf_px": enc_rf,
        "neck": cfg.model.neck["name"],
        "branches": [],
        "gridding_holes": None,
        "summary": {},
        "degenerate": analysis.config_rate_message(cfg),
        "note": None,
    }
    try:
        report["branches"] = analysis.neck_receptive_fields(model.neck, enc_rf, stride, size)
    except ValueError as e:  # a third-party neck: the encoder's numbers and the ERF still apply
        report["note"] = str(e)
        return report
    rates = [b["rate"] for b in report["branches"] if b["rate"]]
    report["gridding_holes"] = analysis.gridding_holes(rates) if rates else None
    report["summary"] = analysis.neck_summary(model.neck, enc_rf, stride, size)
    return report


def read_checkpoint(path: str):
    """The trained SegmentationModule in a run's .ckpt (read with weights_only); clear errors for anything else."""
    from ablate.run.module import SegmentationModule

    if not Path(path).is_file():
        raise ConfigError(
            f"--checkpoint {path!r} does not exist (a run keeps its checkpoints in <run>/checkpoints/*.ckpt)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: it is not a checkpoint we can read
        raise ConfigError(
            f"--checkpoint {path!r} cannot be read as a PyTorch checkpoint ({type(e).__name__}: {str(e).strip()[:200]})"
        ) from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not {"config", "class_names"} <= set(hp) or "state_dict" not in ckpt:
        raise ConfigError(
            f"--checkpoint {path!r} is not a checkpoint of an ablate run: it lacks the state_dict or "
            "the hyper_parameters config and class_names"
        )
    try:
        module = SegmentationModule(hp["config"], hp["class_names"])
    except ConfigError as e:
        raise ConfigError(f"--checkpoint {path!r}: its config is not valid here: {e}") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ConfigError(
            f"--checkpoint {path!r}: its weights do not fit the model its config describes: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None
    return module


def load_checkpoint(path: str, cfg_path: str | None, overrides: list[str]):
    """(config, trained SegmentationModule) from a run's .ckpt; CONFIG, when given, must describe the same model."""
    module = read_checkpoint(path)
    trained = to_dict(module.cfg)
    cfg = (
        load_config(cfg_path, overrides)
        if cfg_path
        else config.from_dict(config.apply_overrides(config.with_defaults(RunConfig, trained), overrides))
    )
    mine, theirs = flatten(to_dict(cfg)["model"]), flatten(trained["model"])
    differ = [
        k for k in sorted(set(mine) | set(theirs)) if k.split(".")[0] in ARCHITECTURE and mine.get(k) != theirs.get(k)
    ]
    if differ:
        pairs = "; ".join(f"model.{k}: checkpoint {theirs.get(k)!r}, config {mine.get(k)!r}" for k in differ)
        raise ConfigError(
            f"--checkpoint {path!r} is from a different model ({pairs}); leave CONFIG out to use "
            "the checkpoint's own config"
        )
    return cfg, module


def erf_report(cfg: RunConfig, module, n: int, out: str | None) -> dict:
    """ERF of `module` (a random-init model at cfg.seed when None) over `n` val images; PNG to `out`."""
    from ablate.data import create_datamodule
    from ablate.run.module import SegmentationModule

    datamodule = create_datamodule(cfg)
    images, source = analysis.val_images(datamodule, cfg.data.image_size, n), "checkpoint"
    if module is None:
        torch.manual_seed(cfg.seed)
        module = SegmentationModule(to_dict(cfg), list(datamodule.classes))
        source = f"random init, seed {cfg.seed}: no --checkpoint"
    erf = analysis.effective_receptive_field(module, images)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        analysis.erf_image(erf).save(out)
    return {
        "source": source,
        "images": len(images),
        "radius50_px": analysis.erf_radius(erf, 0.5),
        "radius90_px": analysis.erf_radius(erf, 0.9),
        "png": out,
    }


def _spans(offsets: list[int]) -> str:
    """[-3, -2, -1, 1, 2, 3, 5] -> '±1-3, ±5' (a symmetric offset list, by its positive half)."""
    runs = []
    for o in [o for o in offsets if o > 0]:
        if runs and o == runs[-1][1] + 1:
            runs[-1][1] = o
        else:
            runs.append([o, o])
    return ", ".join(f"±{a}" if a == b else f"±{a}-{b}" for a, b in runs)


def print_report(r: dict) -> None:
    """Rich tables and lines for a terminal."""
    h, w = r["feature_size"]
    console.print(
        f"{r['encoder']} (encoder_depth {r['encoder_depth']}) at {r['image_size']} px, stride "
        f"{r['stride']}: the neck sees a {h}x{w} map; encoder receptive field {r['encoder_rf_px']} px",
        highlight=False,
    )
    table = Table(
        "branch",
        "rate",
        "RF px",
        *map(str, analysis.TAP_COUNTS),
        box=box.SIMPLE_HEAD,
        title=f"neck {r['neck']!r}: receptive field, share of valid 3x3 taps",
        caption="* pools the whole map" if any(b["global"] for b in r["branches"]) else None,
    )
    for b in r["branches"]:
        taps = [f"{b['taps'][t]:.0%}" if b["taps"] else "" for t in analysis.TAP_COUNTS]
        table.add_row(b["branch"], str(b["rate"] or ""), f"{b['rf_px']}{'*' if b['global'] else ''}", *taps)
    if r["branches"]:
        console.print(table)
    _print_lines(r)


def _print_lines(r: dict) -> None:
    """Gridding holes, notes and the ERF, one line each."""
    holes = r["gridding_holes"]
    if holes is not None:
        reach = max(b["rate"] or 0 for b in r["branches"])
        text = f"{_spans(holes)} ({len(holes)} of {2 * reach + 1})" if holes else "none"
        console.print(
            f"gridding holes, offsets within ±{reach} feature positions that no branch samples: {text}", highlight=False
        )
    for line in (r["degenerate"], r["note"]):
        if line:
            console.print(Text.assemble(("note: ", "yellow"), line))
    if "erf" in r:
        e = r["erf"]
        console.print(
            f"effective receptive field ({e['source']}, {e['images']} val images): half the gradient mass "
            f"within {e['radius50_px']:.1f} px of the centre, 90% within {e['radius90_px']:.1f} px"
            + (f"; image: {e['png']}" if e["png"] else "")
        )


def main(argv: list[str] | None = None) -> int:
    """Command line: parse, analyse, print (or --json)."""
    p = cli.parser(
        "analyze",
        __doc__,
        "YAML run config (default: the checkpoint's, else the defaults) and dotted "
        "overrides, e.g. model.neck.rates=[6,12,18], in any order",
    )
    p.add_argument("--checkpoint", help="a run's Lightning .ckpt (<run>/checkpoints/): ERF of the trained model")
    p.add_argument("--out", help="write the ERF as a PNG here (without --checkpoint: of the random-init model)")
    p.add_argument("--images", type=int, default=16, help="validation images the ERF averages over (default 16)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    args = cli.parse(p, argv)
    return cli.guarded(lambda: _analyze(args))


def _analyze(args) -> int:
    if args.images < 1:
        raise ConfigError(f"--images must be >= 1; got {args.images}")
    path, overrides = cli.split_inputs(args.inputs)
    cfg, module = (
        load_checkpoint(args.checkpoint, path, overrides) if args.checkpoint else (load_config(path, overrides), None)
    )
    report = rf_report(cfg)
    if module is not None or args.out:
        report["erf"] = erf_report(cfg, module, args.images, args.out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
