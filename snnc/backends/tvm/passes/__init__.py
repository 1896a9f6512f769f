"""Passes of the tvm target (found by the pass manager's discovery: ``tvm-*``)."""
