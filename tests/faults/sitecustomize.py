"""Fault injection for ``tests/integration/test_faults.py``, loaded by Python at start-up when this
folder is on PYTHONPATH (the tests put it there for the processes they start: ``ungrok train``,
a sweep's driver and, through its environment, Ray's workers). Inert unless
``UNGROK_FAULT_KILL=<step>:<marker file>`` is set: then the first process that reaches step
``<step>`` of a training run (the model after that many updates, before the next one) writes the
marker and SIGKILLs itself; a process that finds the marker (a rerun, Ray's retry) trains on.
``UNGROK_FAULT_KILL=score:<step>:<marker file>``: the kill comes inside the checkpoint at
``<step>``, right after its scores are stored and before its weights and resume state are saved.

It patches ``runner.train.callbacks.default_callbacks`` as that module is imported (a meta path
finder), so no test hook lives in the library.
"""

import os

_SPEC = os.environ.get("UNGROK_FAULT_KILL")
_TARGET = "runner.train.callbacks"

if _SPEC:
    import importlib.abc
    import importlib.util
    import signal
    import sys

    def _patch(module) -> None:
        after_score = _SPEC.startswith("score:")
        step, marker = _SPEC.removeprefix("score:").split(":", 1)

        def kill(s):
            if s == int(step) and not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

        class KillAt(module.TrainCallback):
            def on_checkpoint(self, ctx, s, loss):
                if after_score:
                    kill(s)

            def on_step(self, ctx, s):
                if not after_score:
                    kill(s)

        defaults = module.default_callbacks

        def patched(rank, progress=True):
            cbs = defaults(rank, progress)
            at = next((i + 1 for i, c in enumerate(cbs) if type(c).__name__ == "ScoreProbes"), len(cbs))
            return [*cbs[:at], KillAt(), *cbs[at:]]

        module.default_callbacks = patched

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != _TARGET:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Finder())
