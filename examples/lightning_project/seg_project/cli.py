"""The project's LightningCLI: the data's number of classes is linked into the model."""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class MyCLI(LightningCLI):
    """LightningCLI with `data.num_classes` -> `model.init_args.num_classes`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def cli_main(args: list[str] | None = None) -> MyCLI:
    """`python main.py fit --config configs/fit.yaml`: any LightningModule and DataModule named in the config."""
    return MyCLI(args=args)
