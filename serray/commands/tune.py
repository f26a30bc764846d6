"""`serray tune` (not built yet)."""

from serray.commands._common import not_implemented

command = not_implemented("tune", "hyperparameter search")
