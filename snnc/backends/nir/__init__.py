"""The NIR backend: export to and import from the Neuromorphic Intermediate Representation."""
