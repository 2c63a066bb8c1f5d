"""Entry point: python main.py fit --config configs/fit.yaml [--trainer.max_epochs=1 ...]."""

from seg_project.cli import cli_main

if __name__ == "__main__":
    cli_main()
