"""`serray features` (not built yet)."""

from serray.commands._common import not_implemented

command = not_implemented("features", "feature extraction")
