"""The hot path: a plain aiokafka loop in every worker that enriches each event at once from the near cache or
the offline data, and sends first sights to the table's owner.
"""
