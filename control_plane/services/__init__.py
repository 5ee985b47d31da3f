"""Use cases of the control plane: registry, builds, fleet, rollouts, training.

Services orchestrate domain decisions and adapters (through the protocols in `ports`); they never speak HTTP and
never hold SQL. They raise only `control_plane.domain.errors` kinds for expected failures.
"""
