"""Built-in passes, one per module; the module name is the pass name in snake case."""
