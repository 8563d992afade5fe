"""The load-test harness behind loadtests/run.py (see its docstring)."""
