"""The control plane's pure core: values, statuses and decisions. No I/O, no clock reads, no SDKs."""
