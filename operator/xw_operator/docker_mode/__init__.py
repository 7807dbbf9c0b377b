"""Docker mode: run ModelInstances as containers on one host.

The containers themselves are the state: every query lists containers by label, so a restarted CLI or
Docker daemon loses nothing and a container removed by hand simply disappears. The few things Docker cannot
hold (a stable server name, the host lock, "stopped on purpose" markers) live in the state directory.
"""
