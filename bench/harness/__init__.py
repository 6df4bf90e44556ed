"""The pieces of bench/run.py: workloads, servers, measurements, environment."""
