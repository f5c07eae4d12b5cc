"""The paper's experiments as data, and the runner that reproduces its tables and figures."""
