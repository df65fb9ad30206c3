"""Lets `pytest conformance/ --cluster NAME` work: loads the shared conformance fixtures."""

from kubitect_conformance.fixtures import *  # noqa: F401,F403
from kubitect_conformance.fixtures import pytest_addoption  # noqa: F401
