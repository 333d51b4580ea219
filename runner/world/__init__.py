"""What a rule, a probe and a synthetic story are: vocabulary, rule families, probe batteries,
corpus presets. Depends only on the leaves (``runner.registry``).

Importing any part of it registers every rule family: the built-in world's two
(``runner.world.rules``), its opt-in a/an family (``runner.world.articles``) and the
rule-versus-prior families of the paper's battery (``runner.world.rvp``), so the registry never
depends on which module happened to be imported.
"""

from runner.world import articles as _articles  # noqa: F401  (registers the built-in a/an family)
from runner.world import rvp as _rvp  # noqa: F401  (registers the rule-versus-prior families)
