"""`serray demo` (not built yet)."""

from serray.commands._common import not_implemented

command = not_implemented("demo", "end-to-end demo")
