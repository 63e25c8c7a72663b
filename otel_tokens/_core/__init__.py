"""Record to queue to aggregate to instruments: the tracker, its consumer, bounded series,
custom meters, and the sink a ledger plugs into.
"""
