"""Loihi target core: chip descriptions, fixed-point formats, a bit-accurate simulator of lava's CUBA
LIF with Dense/Conv synapses, core and chip mapping, and the lava-dl netx HDF5 writer/reader.

Nothing here depends on the snnc IR; the modules import h5py and matplotlib lazily (only netx.py and
plots.py need them), so importing this package is cheap.
"""
