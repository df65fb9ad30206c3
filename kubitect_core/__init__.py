"""kubitect: one YAML in, a highly available Kubernetes cluster on libvirt hosts out."""

__version__ = "0.1.0"
