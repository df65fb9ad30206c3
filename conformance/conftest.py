"""Lets `pytest conformance/ --cluster NAME` work: loads the shared conformance fixtures and hooks."""

from kubitect_conformance.fixtures import *  # noqa: F401,F403
from kubitect_conformance.fixtures import (  # noqa: F401
    pytest_addoption,
    pytest_configure,
    pytest_generate_tests,
)
