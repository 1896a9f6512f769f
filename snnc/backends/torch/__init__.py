"""The torch backend: the reference simulator (DESIGN.md §5)."""
