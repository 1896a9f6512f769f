"""Loihi's own passes (``loihi-*``): they read the chip description, so they live with the backend and
register from here when the pass manager discovers the passes of every backend."""
