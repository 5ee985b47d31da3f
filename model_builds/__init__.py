"""The build toolchain: GPU-class catalog, per-kind builds (ONNX fp32/fp16/int8 QDQ, TensorRT plans), their proof.

Layout: `catalog`/`kinds`/`planner`/`reports` decide (pure); `protocol` is the builder protocol both the builders
and the control plane validate against; `fp16`, `ort_quantize`, `tensorrt_builder` wrap one library each;
`build_steps` makes an artifact of one kind, `execute` builds and proves one task; `worker` + `remote_queue` are the
builder loop and its REST client; `hardware`/`capabilities` say what this host is and can build.
It knows nothing of the control plane's storage or HTTP server; it turns files into files and reports.
"""
