"""surrogate_nas: pick an approximate multiplier for each conv layer of a CNN."""

__version__ = "0.1.0"
