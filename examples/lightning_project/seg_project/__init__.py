"""A small LightningCLI segmentation project, written without ablate: ablate only supplies its neck via the config."""
