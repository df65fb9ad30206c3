"""The bounds every config input is held to, in one place (and in the README).

Why bounds at all: a config is read before anything else runs, often from a file someone else
wrote. Without them a 2.6 KB alias bomb grows to gigabytes, a FIFO blocks forever and a 50 MB
value takes minutes. Each bound is far above what a real cluster config needs (the largest
example config is ~6 KB, ~400 values, 8 levels deep).
"""

from __future__ import annotations

# A config file larger than this is refused before it is read (1 MiB).
MAX_CONFIG_BYTES = 1024 * 1024
# Values (scalars, lists and mappings) after every alias is expanded: stops alias bombs.
MAX_VALUES = 100_000
# Nesting of lists and mappings, counted after alias expansion.
MAX_DEPTH = 64
# Unclosed `[`/`{` counted in the raw text before parsing: the YAML scanner's cost grows with
# the square of flow nesting, so a pathological file is refused before it reaches the scanner.
MAX_FLOW_PRESCAN = 256
# Integers outside the 64-bit range stay text (as in Kubitect's Go decoder, which has no bigger
# integers); a field that needs a number then reports the value instead of crashing on it.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
