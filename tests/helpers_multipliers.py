"""Python multipliers for testing `import_catalog` with a `module:function` source."""

import numpy as np


def truncated(a, b):
    """Vectorisable: exact product with the low byte cleared."""
    return (a * b) & ~0xFF


def asymmetric_scalar(a, b):
    """Only works on scalars (`if` on arrays raises), so the importer must fall back."""
    if a > b:
        return a * b - 1 if a * b else 0
    return a * b


def too_big(a, b):
    return a * b + 1000


def negative(a, b):
    return np.asarray(a) * b - 1


def broken(a, b):
    raise RuntimeError("boom")
