"""The opt-in allocator tuning applies in a fresh process (never on import) and reaches children."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fdconv_zoo.tools.cpu_tuning import MALLOC_ENV

CHILD = """
import json, os, fdconv_zoo
before = {k: os.environ.get(k) for k in %r}
from fdconv_zoo.tools.cpu_tuning import tune_malloc
print(json.dumps({"before": before, "applied": tune_malloc(), "after": {k: os.environ[k] for k in %r}}))
"""


def test_tune_malloc_is_opt_in_and_sets_the_children_environment() -> None:
    keys = sorted(MALLOC_ENV)
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    out = subprocess.run([sys.executable, "-c", CHILD % (keys, keys)], capture_output=True, text=True, env=env,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == dict.fromkeys(keys)       # importing fdconv_zoo changes nothing
    assert result["after"] == MALLOC_ENV
    assert result["applied"] is (sys.platform == "linux")  # glibc here; elsewhere: environment only
