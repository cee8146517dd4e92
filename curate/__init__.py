"""curate-and-train: curate raw task data into a versioned dataset and fine-tune a small model on it.

The `curate` command (`python -m curate`, flows/cli.py) and the one call most users want:

    from curate import load_dataset
    ds = load_dataset("banking77")          # the latest snapshot as a DatasetDict(train, eval)
"""

from core import __version__
from core.snapshot import load_dataset

__all__ = ["__version__", "load_dataset"]
