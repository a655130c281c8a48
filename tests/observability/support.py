"""Reading a prometheus-client registry in tests: sample values and exported names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

# The sample names a family of each type exposes (``*_created`` is disabled).
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def value(registry: CollectorRegistry, name: str, /, **labels: str) -> float:
    """One sample's value; fails the test if the series is absent."""
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    """The label sets of every sample named ``name``."""
    return [dict(s.labels) for family in registry.collect() for s in family.samples
            if s.name == name]


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry's families expose, observed yet or not."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names


def label_names(registry: CollectorRegistry, family_name: str) -> set[str]:
    """Label names declared by a family (from its samples, or its instrument's labels)."""
    for family in registry.collect():
        if family.name == family_name:
            return {k for s in family.samples for k in s.labels if k != "le"}
    raise AssertionError(f"no family {family_name}")
