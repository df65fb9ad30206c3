"""What every Kubernetes installer needs, whatever tool it drives (kubeadm, k3s, a third party's).

Plugins reach these helpers through the SDK (`kubitect_core.sdk.kube`), never through another
installer plugin: a rule such as "the API certificate names the VIP and every load balancer" or
"secrets are 0600 and never logged" is written once, here.
"""
