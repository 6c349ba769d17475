"""Deprecated alias of `surrogate_nas.emulation`, kept because exported `design.json`
files say `import surrogate_nas.axconv` to register the layers before loading."""

from surrogate_nas.emulation import *  # noqa: F401,F403
from surrogate_nas.emulation import layers as _layers  # noqa: F401  (registers the Keras layers)
