"""Unit-test settings: hypothesis runs a bounded number of examples with no per-example
deadline (the first torch call in a process is slow), so the whole unit layer stays fast."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "unit",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("unit")
