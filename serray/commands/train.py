"""`serray train` (not built yet)."""

from serray.commands._common import not_implemented

command = not_implemented("train", "training core")
