"""``rules.yaml`` and ``templates/`` → a typed, validated ``Config``; every error located.

``load_config`` reads and checks everything at once and raises ``ConfigError`` with every problem
as ``rules.yaml:LINE:COL: message``; ``relay check`` and ``relay serve`` load through it. Inside:
``model`` (what the file says, and the specs a load makes), ``loader``, ``sends`` (a rule's sends
compiled), ``yamlfile`` (the strict, line-tracking YAML reader), ``samples`` (sample events,
rendering every rule against them, and previews) and the golden tests of the rules: ``casefile``
(reading ``rules.test.yaml``), ``checks`` (its field checks) and ``goldens`` (running them).
"""

from relay.config.loader import RESERVED_PATHS, load_config
from relay.config.model import (
    Config,
    Mode,
    RuleModel,
    RulesFileModel,
    SendModel,
    SinkSpec,
    SourceSpec,
)

__all__ = [
    "RESERVED_PATHS",
    "Config",
    "Mode",
    "RuleModel",
    "RulesFileModel",
    "SendModel",
    "SinkSpec",
    "SourceSpec",
    "load_config",
]
