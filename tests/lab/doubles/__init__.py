"""TEST DOUBLES for the Kubernetes binaries (lab only; the real ones need the internet)."""
