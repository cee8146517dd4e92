"""curate-and-train: curate raw task data into a versioned dataset and fine-tune a small model on it."""

__version__ = "0.1.0"
