"""`edgectl demo`: the whole product on one machine, end to end, driven through the REST API like an operator.

It starts an embedded broker, a control plane and three edge agents as separate processes, trains the demo
model, builds it for the fleet's GPU classes, rolls it out, checks every device answers like the reference,
and stops everything it started. It must never leave a child process behind, never wait without a deadline,
and never touch a process it did not start.
"""
