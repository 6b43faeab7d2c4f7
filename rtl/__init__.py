"""Marker: this folder installs as the data package ``qsim.rtl_src`` (see pyproject.toml).

The SystemVerilog here is the source of truth; use :func:`qsim.rtl.sources` to get its paths.
"""
