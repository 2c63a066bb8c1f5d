"""Results of a study: rows, statistics, formats, the HTML report, the W&B workspace and W&B files."""
