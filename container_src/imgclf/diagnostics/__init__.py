"""Debugging and profiling that travel with the container: smdebug hook, metric log, system monitor, step
timings, training and profiler rules, and the report they produce."""
