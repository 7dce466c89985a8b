"""Floor: a grpcio aio server echoing `raw_input_contents` back as `raw_output_contents`.

The least grpcio's asyncio server can do per ModelInfer: protobuf parse, build the response from
the request's tensor bytes (no copy in Python), protobuf serialise. Also answers liveness,
readiness, server/model metadata, model config and statistics, as perf_analyzer asks for them.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

import common


class Echo(pbg.GRPCInferenceServiceServicer):
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        m = common.SERVER_METADATA
        return pb.ServerMetadataResponse(name=m["name"], version=m["version"], extensions=m["extensions"])

    async def ModelMetadata(self, request, context):
        T = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name, versions=["1"], platform="python",
            inputs=[T(name="INPUT0", datatype="FP32", shape=[-1, -1])],
            outputs=[T(name="OUTPUT0", datatype="FP32", shape=[-1, -1])])

    async def ModelConfig(self, request, context):
        cfg = mc.ModelConfig(
            name=request.name, backend="python", max_batch_size=64,
            input=[mc.ModelInput(name="INPUT0", data_type=mc.TYPE_FP32, dims=[-1])],
            output=[mc.ModelOutput(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[-1])],
            instance_group=[mc.ModelInstanceGroup(name=request.name, kind=mc.ModelInstanceGroup.KIND_CPU, count=1)])
        return pb.ModelConfigResponse(config=cfg)

    async def ModelStatistics(self, request, context):
        n = common.COUNT.n
        d = pb.StatisticDuration(count=n, ns=0)
        stats = pb.InferStatistics(success=d, queue=d, compute_input=d, compute_infer=d, compute_output=d)
        return pb.ModelStatisticsResponse(model_stats=[pb.ModelStatistics(
            name=request.name, version="1", inference_count=n, execution_count=n, inference_stats=stats)])

    async def ModelInfer(self, request, context):
        common.COUNT.n += 1
        inp = request.inputs[0]
        resp = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        out = resp.outputs.add()
        out.name = "OUTPUT0"
        out.datatype = inp.datatype
        out.shape.extend(inp.shape)
        resp.raw_output_contents.append(request.raw_input_contents[0])
        return resp


async def serve(host: str, port: int) -> None:
    opts = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    server = grpc.aio.server(options=opts)
    pbg.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    a = common.args(__doc__)
    try:
        import uvloop
        uvloop.run(serve(a.host, a.port))
    except ImportError:
        asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
