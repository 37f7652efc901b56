"""The load-benchmark harness behind ``benchmarks/load.py``.

One concept per module: ``wrk`` (running wrk and reading its report), ``loads`` (the traffic
shapes, as data), ``processes`` (pinned child processes in their own process groups),
``certificates`` (the self-signed TLS material), ``config_templates`` (filling in the server
configurations), ``targets`` (the origin and the proxies under test), ``report`` (medians,
ratios, tables, results file) and ``machine`` (what the numbers were measured on).
"""
