"""One training run: the DeepSpeed loop, its callbacks, distributed set-up and the live monitor."""

from runner.train.callbacks import StopAt, TrainCallback, TrainContext
from runner.train.loop import prepare_run, train_run

__all__ = ["StopAt", "TrainCallback", "TrainContext", "prepare_run", "train_run"]
