"""The built-in pipeline: validate → network → storage → vms → loadbalancers → kubernetes → verify.

Registered through the `kubitect` entry point `stages`, exactly like a third party's stage.
"""

from kubitect_stages.kubernetes import KubernetesStage
from kubitect_stages.loadbalancers import LoadBalancersStage
from kubitect_stages.machines import NetworkStage, StorageStage, VmsStage
from kubitect_stages.validate import ValidateStage
from kubitect_stages.verify import VerifyStage

from kubitect_core.hookspecs import hookimpl


@hookimpl
def kubitect_register_stages():
    return [ValidateStage(), NetworkStage(), StorageStage(), VmsStage(), LoadBalancersStage(),
            KubernetesStage(), VerifyStage()]
