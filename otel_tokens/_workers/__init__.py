"""Many worker processes, one endpoint: the per-process files, their format, and the server
that sums them.
"""
