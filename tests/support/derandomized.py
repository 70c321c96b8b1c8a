"""Hypothesis settings of the property tests: derandomized (fixed examples, no example database) so
CI sees the same cases each run."""

from hypothesis import HealthCheck

HYPOTHESIS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
