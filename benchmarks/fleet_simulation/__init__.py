"""The fleet simulator: N devices in one process, each a real MQTT connection with its own credentials, client
id and last will, each running the agent's own core (`edge_agent.core.agent.AgentCore`: signature and generation
checks, reconcile, the apply steps, reporting) over simulated ports (memory for the data directory, a shared
artifact cache for downloads, a runtime that answers the self-test). Options for count, connect concurrency,
jitter, apply delay and faults (self-test failures, slow or cut downloads, disconnects, slow serving).

Used by `benchmarks/fleet_sim.py` (drive a running control plane by hand), `benchmarks/fleet_scale.py` (the
benchmark) and the CI smoke (tests/integration/fleet/test_fleet_scale_smoke.py). Lives outside the product: the
control plane may not import the agent's core, and nothing of the product may import this package.
"""
