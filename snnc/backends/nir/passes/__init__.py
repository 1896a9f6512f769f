"""The nir target's own passes (``nir-*``): they rewrite a converted SNN into what NIR's nodes and the
libraries that load NIR files run; they register from here when the pass manager discovers the passes
of every backend."""
