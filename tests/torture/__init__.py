"""The torture suite: bad input, generated mutants, file-system oddities, faults, concurrency, security.

Every case asserts what the user gets: a run that ends, a clear recorded reason for
each file that was not indexed, and, for the good files, exactly the content a
clean run over the good files alone gives.
"""
