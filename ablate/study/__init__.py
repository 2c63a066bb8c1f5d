"""The study engine: sweep files, storage, workers, seeds, signals and the targets a trial fits."""
