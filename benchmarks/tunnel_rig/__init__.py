"""The tunnel benchmark's rig (benchmarks/tunnel_overhead.py): the control plane's processes (`cloud`) and the
devices' processes, each on the agent's own tunnel link (`edge`). Lives outside the product: nothing of the product
may import this package.
"""
