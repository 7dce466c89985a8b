"""Protobuf wire types generated at build time from the .proto files in this folder.

`model_config_pb2` (Triton's ModelConfig) and `grpc_service_pb2` / `grpc_service_pb2_grpc`
(KServe v2 with Triton's gRPC extensions). All register in naiad's private descriptor pool
(see `_pool`), so they can share a process with tritonclient's modules.
"""
