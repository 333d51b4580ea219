"""The dose registry: ``none`` and the interventions a run may name as ``<name>:<level>``.

Interventions live in a higher layer (``interventions``); they are found through the entry-point
group ``ungrok.doses`` (declared in ``pyproject.toml``), loaded on the first lookup. So
``RunConfig(dose="kill:0.5")`` is valid whatever was imported before it, and ``runner`` never
imports ``interventions``. A new intervention adds one line under
``[project.entry-points."ungrok.doses"]`` (or calls ``DOSES.register`` at run time).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runner.registry import Registry

if TYPE_CHECKING:
    from runner.config import RunConfig


class Intervention(Protocol):
    """What the runner needs of an intervention; implementations live in the ``interventions``
    layer and register in :data:`DOSES` by name (``kill``, ``rescue``, ...)."""

    def check_level(self, level: float) -> None:
        """Raise ValueError for a level this intervention cannot take."""
        ...

    def build(self, cfg: RunConfig, level: float, base_corpus: Path) -> Path:
        """Build (or reuse) the intervened stream of ``cfg`` beside ``base_corpus``; its folder.
        An intervention with keyed levels (``level_keys``, e.g. ``kill:ratio=0.46``) also has
        ``check_keyed(key, value)`` and reads the key from ``cfg.dose``."""
        ...


# "none" is the identity; every other dose is discovered from the entry-point group.
DOSES: Registry[Intervention | None] = Registry("intervention", entry_point_group="ungrok.doses")
DOSES.register("none", None)


def parse_dose(dose: str) -> tuple[str, float | None]:
    """``"kill:0.5"`` -> ``("kill", 0.5)``, ``"none"`` -> ``("none", None)``; the level is checked
    by the intervention itself (``check_level``). Raises ValueError naming the dose. A keyed level
    (``"kill:ratio=0.46"``) gives its number; :func:`parse_dose_key` also gives the key."""
    name, _, value = parse_dose_key(dose)
    return name, value


def parse_dose_key(dose: str) -> tuple[str, str | None, float | None]:
    """``"kill:0.5"`` -> ``("kill", None, 0.5)``; ``"kill:ratio=0.46"`` -> ``("kill", "ratio", 0.46)``
    (a key the intervention lists in ``level_keys``, checked by its ``check_keyed(key, value)``);
    ``"none"`` -> ``("none", None, None)``."""
    if dose == "none":
        return "none", None, None
    name, sep, level = dose.partition(":")
    if not sep:
        raise ValueError(f"dose {dose!r}: write '<intervention>:<level>' (e.g. kill:0.437) or 'none'")
    if name not in DOSES:
        raise ValueError(f"dose {dose!r}: unknown intervention {name!r}; registered: {DOSES.names()}")
    iv = DOSES.get(name)
    key, eq, num = level.partition("=")
    if not eq:
        key, num = None, level
    elif key not in getattr(iv, "level_keys", ()):
        raise ValueError(f"dose {dose!r}: {name} takes no level {key!r}; write {name}:<number>"
                         + "".join(f" or {name}:{k}=<number>" for k in getattr(iv, "level_keys", ())))
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"dose {dose!r}: level {num!r} is not a number") from None
    if iv is not None:
        try:
            if key:
                iv.check_keyed(key, value)  # type: ignore[attr-defined]  (an intervention with level_keys has it)
            else:
                iv.check_level(value)
        except ValueError as e:
            raise ValueError(f"dose {dose!r}: {e}") from None
    return name, key, value
