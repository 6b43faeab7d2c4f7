"""Verification kit for requantization RTL: reusable cocotb components and a runner.

* :mod:`qsim.hdl.ports`: the port map (``ports.toml``) naming your unit's signals;
* :mod:`qsim.hdl.beats`: test beats (directed corners, random, arithmetic edges, a real layer's
  ``qsim vectors``) with golden outputs from :mod:`qsim.fixedpoint` (numpy only);
* :mod:`qsim.hdl.coverage`: functional coverage of requantization with a report;
* :mod:`qsim.hdl.stream`: cocotb harness, valid/ready driver and monitor, scoreboard;
* :mod:`qsim.hdl.regression`: the standard regression (a cocotb test module);
* :mod:`qsim.hdl.runner`: builds a DUT with cocotb's runner in a temporary directory and runs
  the regression (``qsim hdl-test``).

Only :mod:`~qsim.hdl.stream` and :mod:`~qsim.hdl.regression` import cocotb.
"""
