"""The PVC probe verify runs: a small claim on the default StorageClass and a pod that mounts it,
writes a file and reads it back (the manifest names no StorageClass: it must be the default)."""

from __future__ import annotations

PROBE_NAME = "kubitect-rook-probe"


def probe_manifest(image: str = "busybox:1.36") -> str:
    return f"""apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {PROBE_NAME}
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: {PROBE_NAME}
  namespace: default
spec:
  restartPolicy: Never
  containers:
    - name: probe
      image: {image}
      command: ["sh", "-c", "echo kubitect-probe-ok > /data/probe && cat /data/probe"]
      volumeMounts:
        - name: data
          mountPath: /data
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: {PROBE_NAME}
"""
