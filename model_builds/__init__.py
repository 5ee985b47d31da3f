"""The build toolchain: the GPU-class catalog, ONNX inspection and optimisation, parity validation.

It knows nothing of the control plane's storage or HTTP; it turns files into files and reports.
"""
