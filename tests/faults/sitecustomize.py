"""Fault injection for ``tests/integration/test_faults.py``, loaded by Python at start-up when this
folder is on PYTHONPATH (the tests put it there for the processes they start: ``ungrok train``,
a sweep's driver and, through its environment, Ray's workers). Inert unless
``UNGROK_FAULT_KILL=<step>:<marker file>`` is set: then the first process that reaches step
``<step>`` of a training run (the model after that many updates, before the next one) writes the
marker and SIGKILLs itself; a process that finds the marker (a rerun, Ray's retry) trains on.

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
        step, marker = _SPEC.split(":", 1)

        class KillAt(module.TrainCallback):
            def on_step(self, ctx, s):
                if s == int(step) and not os.path.exists(marker):
                    with open(marker, "w") as f:
                        f.write(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)

        defaults = module.default_callbacks
        module.default_callbacks = lambda rank, progress=True: [*defaults(rank, progress), KillAt()]

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
