"""One training run: the DeepSpeed loop, its callbacks, distributed set-up and the live monitor."""

from runner.train.loop import prepare_run, train_run

__all__ = ["prepare_run", "train_run"]
