"""Manifests that run the model repository on a cluster: NVIDIA's Triton container as a plain
Kubernetes Deployment (`kubernetes`), or as a KServe InferenceService (`kserve`), reading the
repository from object storage or a volume claim (`location`), with as many GPUs per replica as
the repository's configs agree with (`gpus`). Docs: docs/deploy.md."""
