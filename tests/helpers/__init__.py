"""What the tests share and are not tests themselves: local servers, fixtures' data, checks.

Test modules import from here (and from tests.conftest), never from one another; the
benchmarks import the workload and the naive baseline from here too.
"""
