"""The resolver: throttled batches of resolve requests to the geo API, deduplicated against the asked log so
no request is paid for twice.
"""
