"""JSON bodies of the non-inference routes, in Triton's field names and order
(`core:src/tritonserver.cc` message serialisation, SPEC §1.6, §10)."""

from __future__ import annotations

from typing import Any, Iterable

from naiad.kernel.inference.messages import (
    CudaShmRegion,
    ModelIndexEntry,
    ModelMetadata,
    ServerMetadata,
    SystemShmRegion,
    TensorMetadata,
)
from naiad.kernel.inference.stats import BatchStats, Duration, InferStats, ModelStatistics, ResponseStats


def server_metadata(meta: ServerMetadata) -> dict[str, Any]:
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def _tensor(t: TensorMetadata) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}


def model_metadata(meta: ModelMetadata) -> dict[str, Any]:
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor(t) for t in meta.inputs],
        "outputs": [_tensor(t) for t in meta.outputs],
    }


def _d(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def _infer_stats(s: InferStats) -> dict[str, Any]:
    return {
        "success": _d(s.success),
        "fail": _d(s.fail),
        "queue": _d(s.queue),
        "compute_input": _d(s.compute_input),
        "compute_infer": _d(s.compute_infer),
        "compute_output": _d(s.compute_output),
        "cache_hit": _d(s.cache_hit),
        "cache_miss": _d(s.cache_miss),
    }


def _response_stats(s: ResponseStats) -> dict[str, Any]:
    return {
        "compute_infer": _d(s.compute_infer),
        "compute_output": _d(s.compute_output),
        "success": _d(s.success),
        "fail": _d(s.fail),
        "empty_response": _d(s.empty_response),
        "cancel": _d(s.cancel),
    }


def _batch_stats(b: BatchStats) -> dict[str, Any]:
    return {
        "batch_size": b.batch_size,
        "compute_input": _d(b.compute_input),
        "compute_infer": _d(b.compute_infer),
        "compute_output": _d(b.compute_output),
    }


def _model_stats(s: ModelStatistics) -> dict[str, Any]:
    return {
        "name": s.name,
        "version": s.version,
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": _infer_stats(s.inference_stats),
        "response_stats": {k: _response_stats(v) for k, v in s.response_stats.items()},
        "batch_stats": [_batch_stats(s.batch_stats[k]) for k in sorted(s.batch_stats)],
        "memory_usage": [{"type": m.type, "id": m.id, "byte_size": m.byte_size} for m in s.memory_usage],
    }


def statistics(stats: Iterable[ModelStatistics]) -> dict[str, Any]:
    return {"model_stats": [_model_stats(s) for s in stats]}


def repository_index(entries: Iterable[ModelIndexEntry]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        item: dict[str, Any] = {"name": e.name}
        if e.version:
            item["version"] = e.version
        if e.state:
            item["state"] = e.state
        if e.reason:
            item["reason"] = e.reason
        out.append(item)
    return out


def system_shm_status(regions: Iterable[SystemShmRegion]) -> list[dict[str, Any]]:
    return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]


def cuda_shm_status(regions: Iterable[CudaShmRegion]) -> list[dict[str, Any]]:
    return [{"name": r.name, "device_id": r.device_id, "byte_size": r.byte_size} for r in regions]
