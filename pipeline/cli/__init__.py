"""The `geo-pipeline` command: the dispatcher, the worker command, the operator commands and what they
print."""
