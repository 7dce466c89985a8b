"""What the framework backends (onnxruntime, pytorch, tensorrt) share.

Modules, one job each: `dtypes` (config / numpy / framework datatype maps), `params`
(config `parameters` and `--backend-config` values), `io` (a model's input and output
specs as the config states them, reshape included), `batch` (one batch tensor per input
from a batch of requests, and outputs split back per request, over `naiad.ext.batching`),
`worker` (the dedicated thread each instance runs its framework calls on) and
`instance` (`FrameworkInstance`: the execute loop the three backends have in common).

Nothing here imports a framework: each backend imports its own, guarded, on first use.
"""
