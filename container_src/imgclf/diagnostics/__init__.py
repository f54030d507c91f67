"""Debugging and profiling that travel with the container: smdebug hook, metric log, system monitor, step
timings, training and profiler rules, and the report they produce."""

import os

# smdebug logs each saved step and trial refresh at INFO; keep its warnings unless the user asks for more.
os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")
