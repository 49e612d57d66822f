"""The helper process: the plugin's Python work, out of the driver's interpreter.

``client.HelperProcess`` (the driver's side) starts it and speaks to it over a socket pair
(``protocol``); ``child`` is the process itself, which sends the task's reports and reads
the sessions it is given (``extraction``). Nothing in ``spark/`` imports this package: the
observer is handed the helper by the activation.
"""
