"""Names of the ML Metadata properties our components set or read, with their readers.

No TFX import: the runner and `status` read these before or without loading TFX.
"""
from typing import Optional

SPAN_PROPERTY = "span"  # set by ExampleGen's driver; TFX 1.16 keeps it as a custom property of Examples
# On Transform's updated analyzer cache (components/analysis_reuse.py): datasets taken from the cache / analysed.
REUSED_PROPERTY = "datasets_reused"
ANALYSED_PROPERTY = "datasets_analysed"


def _int(artifact, name: str) -> Optional[int]:
    for properties in (artifact.properties, artifact.custom_properties):
        if name in properties:
            return properties[name].int_value
    return None


def span_of(artifact) -> Optional[int]:
    """The span of an Examples artifact (an MLMD proto), or None when it has none."""
    return _int(artifact, SPAN_PROPERTY)


def analysis_reuse(cache_artifact) -> Optional[str]:
    """'reused 4 of 6 datasets' from an updated analyzer cache (an MLMD proto); None when not recorded."""
    reused, analysed = _int(cache_artifact, REUSED_PROPERTY), _int(cache_artifact, ANALYSED_PROPERTY)
    if reused is None or analysed is None:
        return None
    return f"reused {reused} of {reused + analysed} datasets"
