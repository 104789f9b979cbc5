"""Deprecated location of the dynamic-conv baseline models: use ``fdconv_zoo.baselines`` (removed after 0.2)."""

import warnings

from ..baselines.models import *  # noqa: F403  (importing registers the baseline models, as this module did)
from ..baselines.models import __all__  # noqa: F401

warnings.warn("fdconv_zoo.models.fd_dynconv_baselines moved to fdconv_zoo.baselines (import fdconv_zoo.baselines "
              "registers the baseline models)", DeprecationWarning, stacklevel=2)
