"""naiad's private protobuf descriptor pool.

Triton's protos declare `inference.*` names; tritonclient's generated modules register
the same names in protobuf's default pool. Keeping naiad's in a pool of their own lets
both live in one process (tests, BLS helpers) without a duplicate-symbol error.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
