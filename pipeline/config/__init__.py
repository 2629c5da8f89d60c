"""The worker's settings: one frozen object built from the environment at the edge, its refusal rules, bounds
and secrets.
"""
