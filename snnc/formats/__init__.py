"""File formats that a frontend reads and a backend writes, one module each, so that the reader and
the writer share one definition of the format's conventions (DESIGN §1: data flows one way; format
code used by both sides lives here, below both)."""
