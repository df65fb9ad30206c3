"""The scale rows of the change rules (reference/kubitect.md §3.2) that Day-2 scaling touches: adding
and removing workers and load balancers is allowed, and the event says what will happen to the node."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubitect_core.changes import evaluate
from kubitect_core.config import validate_raw
from kubitect_core.engine import resolved_dump

SEED = Path(__file__).resolve().parents[2] / "examples" / "ha.yaml"


def _events(mutate, action="scale"):
    old = yaml.safe_load(SEED.read_text())
    new = copy.deepcopy(old)
    mutate(new["cluster"]["nodes"])
    return evaluate(resolved_dump(validate_raw(old)), resolved_dump(validate_raw(new)), action)


def _add_worker(nodes):
    nodes["worker"]["instances"].append({"id": 4, "ip": "10.10.13.23", "host": "host3"})


def _drop_worker(nodes):
    nodes["worker"]["instances"].pop()


def _add_lb(nodes):
    nodes["loadBalancer"]["instances"].append({"id": 3, "ip": "10.10.13.203", "host": "host1", "priority": 10})


def _drop_lb(nodes):
    nodes["loadBalancer"]["instances"].pop()


@pytest.mark.parametrize(("mutate", "path", "says"), [
    (_add_worker, "cluster.nodes.worker.instances[4]", "joins with a fresh bootstrap token"),
    (_drop_worker, "cluster.nodes.worker.instances[3]", "cordoned and drained (PodDisruptionBudgets respected)"),
    (_add_lb, "cluster.nodes.loadBalancer.instances[3]", "on the others reload (the VIP stays)"),
    (_drop_lb, "cluster.nodes.loadBalancer.instances[2]", "stops keepalived first (a VIP it holds moves at once)"),
], ids=["worker-add", "worker-remove", "lb-add", "lb-remove"])
def test_scale_allows_the_row_and_says_what_happens(mutate, path, says):
    events = _events(mutate)
    assert [(e.path, e.severity) for e in events] == [(path, "allow")]
    assert says in events[0].message


def test_removing_a_worker_names_the_data_disk_flag():
    (event,) = _events(_drop_worker)
    assert "--delete-data-disks" in event.message


@pytest.mark.parametrize("mutate", [_add_worker, _drop_worker, _add_lb, _drop_lb])
def test_without_the_scale_action_the_same_change_is_refused(mutate):
    (event,) = _events(mutate, action="create")
    assert event.severity == "error" and "--action scale" in event.message
