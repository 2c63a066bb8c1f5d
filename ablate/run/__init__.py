"""One training run of ablate's own model: the model, the LightningModule, loggers, visuals, analysis."""
