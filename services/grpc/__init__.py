"""gRPC service: Triton's `inference.GRPCInferenceService` and `grpc.health.v1.Health/Check`."""

from .service import GrpcService

__all__ = ["GrpcService"]
