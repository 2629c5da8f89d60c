"""Where answers come from: the provider protocol and chain, ip-api (its client, answer validation and
throttle), and the offline MaxMind-format files.
"""
