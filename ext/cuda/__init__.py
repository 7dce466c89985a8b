"""The CUDA path's pieces, one job a module: runtime (probing, checked calls), streams
(streams, events, device buffers), copies (host<->device), shm (CUDA shared-memory
regions), dlpack (DLPack producer). `naiad.ext.cuda_path` is their public face."""
